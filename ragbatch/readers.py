"""Find input files and read them into section records.

`discover(paths)` turns the PATHs given on the command line (files, directories, globs)
into a list of files to read. `read_file(file)` turns one file into section records,
plain dicts of str/int so they can cross into Ray Data workers:

    {"path", "root", "source", "title", "section", "text", "page_title", "headings", "anchors"}

`source` is the file's path relative to the indexed root, plus `#anchor` for a section
of an HTML page (its `id`) or of a Markdown file (its GitHub slug). `page_title` is the page's <title> (HTML) or first
heading (Markdown), "" for text; `headings` is the path of section titles from
the outermost section down to the record's own; `anchors` are the other link targets
inside an HTML section (Sphinx labels, glossary terms, API objects: `#term-Task`), so a
link to one of them can be matched to the section holding it. In a record's text,
blocks (paragraphs, list items, headings) are separated by a blank line, as the
paragraphs of a .txt file are; a code block keeps its own lines.

bs4, lxml and markdown-it are imported inside the functions that use them, so that
importing this module (and `ragbatch --help`) stays fast.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.errors import InputFileError

SUPPORTED_SUFFIXES = {".txt", ".html", ".htm", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}

TITLE_MAX_CHARS = 100


# ---------------------------------------------------------------------------
# Discovery


@dataclass
class Discovery:
    files: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[InputFileError] = field(default_factory=list)


def discover(paths: list[str]) -> Discovery:
    """Expand files, directories and globs into files to read, in a deterministic order."""
    found = Discovery()
    seen: set[str] = set()
    for given in paths:
        if os.path.isdir(given):
            _add_directory(given, found, seen)
        elif os.path.exists(given):
            _add_file(given, given, found, seen)
        elif re.search(r"[*?[]", given):
            matches = sorted(glob.glob(given, recursive=True))
            if not matches:
                found.errors.append(InputFileError(given, "no files match this pattern"))
            for match in matches:
                if os.path.isdir(match):
                    _add_directory(match, found, seen)
                else:
                    _add_file(match, match, found, seen)
        else:
            found.errors.append(InputFileError(given, "no such file or directory"))
    return found


def _add_directory(directory: str, found: Discovery, seen: set[str]) -> None:
    def report(error: OSError) -> None:
        where = error.filename or directory
        found.errors.append(InputFileError(where, f"cannot read directory ({error.strerror})"))

    relpaths = []
    for dirpath, dirnames, filenames in os.walk(directory, onerror=report):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .git, .venv, ...
        for name in filenames:
            if not name.startswith("."):
                relpaths.append(Path(os.path.relpath(os.path.join(dirpath, name), directory)))
    for relpath in sorted(relpaths):
        _add_file(os.path.join(directory, relpath), directory, found, seen, relpath.as_posix())


def _add_file(shown: str, root: str, found: Discovery, seen: set[str],
              relpath: str | None = None) -> None:
    suffix = Path(shown).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        found.skipped.append(f"{shown}: skipped (unsupported type {suffix or 'without extension'})")
        return
    key = os.path.realpath(shown)  # the same file reached twice (./a.txt, a.txt, a link)
    if key in seen:
        return
    seen.add(key)
    found.files.append({
        "path": os.path.abspath(shown),
        "root": os.path.abspath(root),
        "relpath": relpath or Path(shown).name,
    })


# ---------------------------------------------------------------------------
# Reading


def read_file(file: dict) -> list[dict]:
    """Read one discovered file into section records, in document order."""
    path = file["path"]
    shown = _shown_path(path)
    suffix = Path(path).suffix.lower()
    text = _read_utf8_text(path, shown)
    page_title, anchors = "", {}
    if suffix in HTML_SUFFIXES:
        sections, page_title, anchors = _html_sections(text, shown)
    elif suffix in MARKDOWN_SUFFIXES:
        sections, page_title = _markdown_sections(text, shown)
    elif suffix == ".txt":
        sections = [(*_plain_text_section(text), [])]
    else:
        raise InputFileError(shown, f"unsupported type {suffix or 'without extension'}; "
                                    f"ragbatch reads {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    return [
        {
            "path": path,
            "root": file["root"],
            "source": file["relpath"] + (f"#{anchor}" if anchor else ""),
            "title": title,
            "section": number,
            "text": body,
            "page_title": page_title,
            "headings": headings,
            "anchors": anchors.get(anchor, []),
        }
        for number, (anchor, title, body, headings) in enumerate(sections)
    ]


def _shown_path(path: str) -> str:
    """The path as the user most likely typed it: relative to the working directory if inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _read_utf8_text(path: str, shown: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        raise InputFileError(shown, "cannot read file (permission denied)") from None
    except OSError as error:
        raise InputFileError(shown, f"cannot read file ({error.strerror})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(shown, "UTF-16 text; convert it to UTF-8")
    if b"\x00" in data:
        raise InputFileError(
            shown, "binary file (contains NUL bytes); ragbatch reads UTF-8 text, HTML and Markdown")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputFileError(
            f"{shown}:{line}",
            f"not UTF-8 text (invalid byte 0x{data[error.start]:02x} at offset {error.start}); "
            "convert it to UTF-8 or remove it",
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InputFileError(shown, "empty file" if not text else "empty file (only whitespace)")
    return text


def _tidy_line(line: str) -> str:
    return " ".join(line.split())


def _short_title(text: str) -> str:
    title = _tidy_line(text)
    return title if len(title) <= TITLE_MAX_CHARS else title[: TITLE_MAX_CHARS - 1].rstrip() + "…"


# --- plain text


def _plain_text_section(text: str) -> tuple[str, str, str]:
    """One section per .txt file: paragraphs split on blank lines, else one per line."""
    if re.search(r"\n[ \t]*\n", text.strip()):
        paragraphs = re.split(r"\n[ \t]*\n", text)
    else:
        paragraphs = text.split("\n")
    tidied = []
    for paragraph in paragraphs:
        lines = [_tidy_line(line) for line in paragraph.split("\n")]
        if any(lines):
            tidied.append("\n".join(line for line in lines if line))
    body = "\n\n".join(tidied)
    return "", _short_title(body.split("\n", 1)[0]), body


# --- HTML

# Page chrome, dropped along with <aside>, <header> and <footer> (see _is_chrome). Not
# [hidden] elements: sphinx-tabs hides every tab but the first (the Java version of an example).
_DROPPED_TAGS = {"head", "nav", "script", "style", "form", "noscript", "button", "template",
                 "iframe", "svg", "object", "select", "textarea"}
_DROPPED_CLASSES = {"headerlink", "viewcode-link", "viewcode-back"}  # Sphinx permalinks, [source]
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Elements whose start and end break the text into blocks; everything else is inline.
_BLOCK_TAGS = _HEADINGS | {
    "address", "article", "blockquote", "br", "caption", "dd", "details", "dialog", "div", "dl",
    "dt", "fieldset", "figcaption", "figure", "hr", "li", "main", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}


class _Record:
    """A section being collected: its anchor, its title and its text blocks."""

    def __init__(self, anchor: str, title: str = "", parent: "_Record | None" = None):
        self.anchor, self.title, self.parent = anchor, title, parent
        self.ids: list[str] = []  # other elements' ids inside it: link targets within the section
        self.blocks: list[str] = []
        self.inline: list[str] = []

    def end_block(self) -> None:
        line = _tidy_line("".join(self.inline))
        if line:
            self.blocks.append(line)
        self.inline = []

    def headings(self) -> list[str]:
        """Titles of the enclosing sections, outermost first, then this record's own."""
        titles, record = [], self
        while record is not None:
            if record.title:
                titles.append(record.title)
            record = record.parent
        return titles[::-1]

    def has_text(self) -> bool:
        # The title line alone is not content: a heading over nested sections gives no record.
        return any(block != self.title for block in self.blocks)


def _html_sections(text: str, shown: str) -> tuple[list[tuple[str, str, str, list[str]]], str, dict[str, list[str]]]:
    from bs4 import BeautifulSoup

    content_html, content_name, page_title = _main_content(text)
    soup = BeautifulSoup(content_html, "lxml")
    content = soup.find(content_name) or soup
    sections, anchors = [], {}
    records = _collect_html_records(content)
    own = {record.anchor for record in records}
    for record in records:
        if not record.has_text():
            continue
        title = record.title or page_title or _short_title(record.blocks[0])
        sections.append((record.anchor, title, "\n\n".join(record.blocks), record.headings()))
        anchors[record.anchor] = [i for i in dict.fromkeys(record.ids) if i not in own]
    if not sections:
        raise InputFileError(shown, f"no text found (looked in its <{content_name}>)")
    return sections, page_title, anchors


def _main_content(text: str) -> tuple[str, str, str]:
    """The page's main content as HTML without chrome, its tag name, and the page's <title>.

    This first pass uses lxml directly: it is C, while BeautifulSoup builds a Python object
    per tag, and a Ray docs page is 2/3 navigation sidebar and its code blocks thousands of
    highlighting <span>s. Leaving those out makes reading the corpus about 4x faster.
    """
    import lxml.etree
    import lxml.html

    parser = lxml.html.HTMLParser(encoding="utf-8")  # bytes: a str may not carry <?xml encoding?>
    try:
        page = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
    except lxml.etree.ParserError:  # only comments or a doctype
        return "", "body", ""
    title = _tidy_line(page.findtext(".//title") or "")
    content = _content_element(page)
    for element in [e for e in content.iter() if _is_chrome(e)]:
        if element.getparent() is not None:
            element.drop_tree()  # keeps the text that follows it
    for pre in list(content.iter("pre")):
        code = pre.text_content()
        for child in list(pre):
            pre.remove(child)
        pre.text = code
    return lxml.html.tostring(content, encoding="unicode"), content.tag, title


def _content_element(page):
    for find in (lambda: page.iter("main"), lambda: page.xpath("//*[@role='main']"),
                 lambda: page.iter("article"), lambda: page.iter("body")):
        for element in find():
            return element
    return page


def _is_chrome(element) -> bool:
    if not isinstance(element.tag, str):  # comments, processing instructions
        return True
    classes = set((element.get("class") or "").split())
    if element.tag == "aside":
        # Docutils writes sidebars and footnotes as <aside>: those are the page's content.
        return classes.isdisjoint({"sidebar", "footnote", "footnote-list"})
    if element.tag in _DROPPED_TAGS or not classes.isdisjoint(_DROPPED_CLASSES):
        return True
    # A <header> or <footer> is page chrome, unless it holds the article's heading.
    return element.tag in ("header", "footer") and not any(
        child.tag in _HEADINGS for child in element.iter())


def _is_section(tag) -> bool:
    # Sphinx writes <section id=...>; older docutils wrote <div class="section" id=...>.
    return tag.name == "section" or (tag.name == "div" and "section" in (tag.get("class") or []))


def _heading_anchor(heading) -> str:
    """The id a heading can be linked by: its own, a child anchor's, or its parent's."""
    if heading.get("id"):
        return heading["id"]
    child = heading.find("a", attrs={"id": True}) or heading.find("a", attrs={"name": True})
    if child:
        return child.get("id") or child.get("name")
    parent = heading.parent
    if (parent is not None and parent.get("id") and not _is_section(parent)
            and parent.find(True) is heading):
        return parent["id"]
    return ""


def _inline_text(tag) -> str:
    """A tag's text on one line: inline elements joined as they are, blocks spaced apart."""
    from bs4.element import NavigableString

    parts = []
    for node in tag.descendants:
        if type(node) is NavigableString:
            parts.append(str(node))
        elif node.name in _BLOCK_TAGS:
            parts.append(" ")
    return _tidy_line("".join(parts))


def _heading_text(heading) -> str:
    return _inline_text(heading).removesuffix("¶").rstrip()


def _collect_html_records(content) -> list[_Record]:
    """Walk the content in document order, giving each section its own text.

    A section's text excludes its nested sections, which are records of their own; text
    after a nested section ends belongs to the enclosing section again. Outside sections
    (and after a section's title), a heading with an anchor starts a new record that runs
    until the next such heading.
    """
    from bs4.element import NavigableString, Tag

    records = [_Record("")]  # text before the first section or heading
    # One entry per open section (the page itself first): [section's record, current record].
    scopes = [[None, records[0]]]
    pending: list = [content]  # nodes to visit, and markers, in reverse document order
    while pending:
        node = pending.pop()
        current = scopes[-1][1]
        if node is _END_BLOCK:
            current.end_block()
        elif node is _END_SECTION:
            current.end_block()
            scopes.pop()
        elif isinstance(node, NavigableString):
            if type(node) is NavigableString:  # not a comment, doctype or CDATA
                current.inline.append(str(node))
        elif not isinstance(node, Tag):
            continue
        elif node is not content and _is_section(node):
            current.end_block()
            record = _Record(node.get("id") or "", parent=scopes[-1][0])
            records.append(record)
            scopes.append([record, record])
            pending.append(_END_SECTION)
            pending.extend(reversed(node.contents))
        elif node.name in _HEADINGS:
            current.end_block()
            title, anchor = _heading_text(node), _heading_anchor(node)
            section = scopes[-1][0]
            if current is section and not current.title:
                # A section's first heading is its title (and its anchor, if it has no id).
                current.title = title
                current.anchor = current.anchor or anchor
            elif anchor:
                current = _Record(anchor, title, parent=scopes[-1][0])
                records.append(current)
                scopes[-1][1] = current
            elif not current.title and not current.blocks:
                current.title = title
            if title:
                current.blocks.append(title)
        elif node.name == "tr":
            # A table row is one line, its cells separated by " | ".
            current.end_block()
            cells = [_inline_text(cell) for cell in node.find_all(["td", "th"], recursive=False)]
            if any(cells):
                current.blocks.append(" | ".join(cells))
        elif node.name == "pre":
            current.end_block()
            code = "\n".join(line.rstrip() for line in node.get_text().strip("\n").split("\n"))
            if code.strip():
                current.blocks.append(code)
        else:
            if node.get("id") and node is not content:
                current.ids.append(node["id"])
            if node.name in _BLOCK_TAGS:
                current.end_block()
                pending.append(_END_BLOCK)
            pending.extend(reversed(node.contents))
    scopes[-1][1].end_block()
    return records


_END_BLOCK = object()
_END_SECTION = object()


# --- Markdown


def _markdown_sections(text: str, shown: str) -> tuple[list[tuple[str, str, str, list[str]]], str]:
    """Split at headings (found by markdown-it, so a `# comment` in a code fence is not one).

    Each section keeps its Markdown source; its text starts with the heading's plain text.
    """
    from markdown_it import MarkdownIt

    lines = _without_front_matter(text).split("\n")
    tokens = MarkdownIt("commonmark").parse("\n".join(lines))
    headings = []  # (first line, line after the heading, plain text, heading path)
    open_levels: list[tuple[int, str]] = []  # (level, title) of the headings enclosing this one
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            level, title = int(token.tag[1:]), _inline_plain_text(tokens[index + 1])
            open_levels = [(lv, t) for lv, t in open_levels if lv < level] + [(level, title)]
            headings.append((token.map[0], token.map[1], title, [t for _, t in open_levels if t]))

    slugs = _GitHubSlugs()
    sections = []
    preamble = _tidy_markdown("\n".join(lines[: headings[0][0] if headings else len(lines)]))
    if preamble:
        sections.append(("", _short_title(preamble.split("\n", 1)[0]), preamble, []))
    for number, (_, end, title, path) in enumerate(headings):
        anchor = slugs.slug(title)
        stop = headings[number + 1][0] if number + 1 < len(headings) else len(lines)
        body = _tidy_markdown("\n".join(lines[end:stop]))
        if body:  # a heading directly followed by a sub-heading gives no record of its own
            sections.append((anchor, _short_title(title) or anchor,
                             f"{title}\n\n{body}" if title else body, path))
    if not sections:
        raise InputFileError(shown, "no text found (only headings or markup)")
    page_title = next((title for _, _, title, path in headings if len(path) == 1 and title), "")
    return sections, page_title


def _without_front_matter(text: str) -> str:
    # A leading YAML block (---/---) is metadata; markdown-it would read its end as a heading.
    # Its lines are blanked rather than removed, to keep line numbers.
    match = re.match(r"---\n.*?\n(---|\.\.\.)[ \t]*(\n|$)", text, re.DOTALL)
    if not match:
        return text
    return "\n" * match.group(0).count("\n") + text[match.end():]


def _inline_plain_text(inline) -> str:
    """The text a heading renders to, without its markup (what GitHub slugs)."""
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_plain_text(child))
    return _tidy_line("".join(parts))


def _tidy_markdown(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)


class _GitHubSlugs:
    """Anchors as GitHub makes them: lowercase, punctuation removed, spaces to '-', repeats '-1'."""

    def __init__(self):
        self.used: set[str] = set()

    def slug(self, title: str) -> str:
        base = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        slug, repeat = base, 0
        while slug in self.used or not slug:
            repeat += 1
            slug = f"{base}-{repeat}"
        self.used.add(slug)
        return slug
