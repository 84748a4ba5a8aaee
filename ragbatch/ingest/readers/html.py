"""HTML pages into sections: the main content without page chrome, one section per
<section id> or anchored heading (Sphinx and docutils layouts included)."""

from __future__ import annotations

from dataclasses import dataclass

from ragbatch.errors import InputFileError
from ragbatch.ingest.readers.text import short_title, tidy_line

# Page chrome, dropped along with <aside>, <header> and <footer> (see _is_chrome). Not
# [hidden] elements: sphinx-tabs hides every tab but the first (the Java version of an example).
_DROPPED_TAGS = {"head", "nav", "script", "style", "form", "noscript", "button", "template", "iframe", "svg", "object", "select", "textarea"}
_DROPPED_CLASSES = {"headerlink", "viewcode-link", "viewcode-back"}  # Sphinx permalinks, [source]
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Elements whose start and end break the text into blocks; everything else is inline.
_BLOCK_TAGS = _HEADINGS | {
    "address",
    "article",
    "blockquote",
    "br",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
}


@dataclass
class _Scope:
    """An open section: its record (None for the page itself) and the record text goes to
    now (a heading with an anchor inside the section starts a record of its own)."""

    section: _Record | None
    current: _Record


class _Record:
    """A section being collected: its anchor, its title and its text blocks."""

    def __init__(self, anchor: str, title: str = "", parent: _Record | None = None):
        self.anchor, self.title, self.parent = anchor, title, parent
        self.ids: list[str] = []  # other elements' ids inside it: link targets within the section
        self.blocks: list[str] = []
        self.inline: list[str] = []

    def end_block(self) -> None:
        line = tidy_line("".join(self.inline))
        if line:
            self.blocks.append(line)
        self.inline = []

    def headings(self) -> list[str]:
        """Titles of the enclosing sections, outermost first, then this record's own."""
        titles: list[str] = []
        record: _Record | None = self
        while record is not None:
            if record.title:
                titles.append(record.title)
            record = record.parent
        return titles[::-1]

    def has_text(self) -> bool:
        # The title line alone is not content: a heading over nested sections gives no record.
        return any(block != self.title for block in self.blocks)


def html_sections(text: str, shown: str) -> tuple[list[tuple[str, str, str, list[str]]], str, dict[str, list[str]]]:
    """(anchor, title, text, heading path) per section, the page's <title>, and per section
    anchor the other link targets inside it (Sphinx labels, glossary terms, API objects)."""
    from bs4 import BeautifulSoup

    content_html, content_name, page_title = _main_content(text, shown)
    soup = BeautifulSoup(content_html, "lxml")
    content = soup.find(content_name) or soup
    sections, anchors = [], {}
    records = _collect_html_records(content)
    own = {record.anchor for record in records}
    for record in records:
        if not record.has_text():
            continue
        title = record.title or page_title or short_title(record.blocks[0])
        sections.append((record.anchor, title, "\n\n".join(record.blocks), record.headings()))
        anchors[record.anchor] = [i for i in dict.fromkeys(record.ids) if i not in own]
    if not sections:
        raise InputFileError(shown, f"no text found (looked in its <{content_name}>)")
    return sections, page_title, anchors


def _main_content(text: str, shown: str) -> tuple[str, str, str]:
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
    _refuse_cut_short(parser, shown)
    title = tidy_line(page.findtext(".//title") or "")
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


def _refuse_cut_short(parser, shown: str) -> None:
    """libxml2 stops reading a page nested deeper than 256 elements (a resource limit, not
    a syntax error): the rest of the page would be silently missing, so refuse it."""
    for error in parser.error_log:
        if error.level_name == "FATAL" and error.type_name == "ERR_RESOURCE_LIMIT":
            raise InputFileError(
                f"{shown}:{error.line}", f"HTML nested too deep to read ({error.message.split(',')[0].lower()}); the text past that depth would be lost"
            )


def _content_element(page):
    for find in (lambda: page.iter("main"), lambda: page.xpath("//*[@role='main']"), lambda: page.iter("article"), lambda: page.iter("body")):
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
    return element.tag in ("header", "footer") and not any(child.tag in _HEADINGS for child in element.iter())


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
    if parent is not None and parent.get("id") and not _is_section(parent) and parent.find(True) is heading:
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
    return tidy_line("".join(parts))


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
    # One entry per open section (the page itself first).
    scopes = [_Scope(None, records[0])]
    pending: list = [content]  # nodes to visit, and markers, in reverse document order
    while pending:
        node = pending.pop()
        current = scopes[-1].current
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
            record = _Record(str(node.get("id") or ""), parent=scopes[-1].section)
            records.append(record)
            scopes.append(_Scope(record, record))
            pending.append(_END_SECTION)
            pending.extend(reversed(node.contents))
        elif node.name in _HEADINGS:
            current.end_block()
            title, anchor = _heading_text(node), _heading_anchor(node)
            section = scopes[-1].section
            if current is section and not current.title:
                # A section's first heading is its title (and its anchor, if it has no id).
                current.title = title
                current.anchor = current.anchor or anchor
            elif anchor:
                current = _Record(anchor, title, parent=scopes[-1].section)
                records.append(current)
                scopes[-1].current = current
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
                current.ids.append(str(node["id"]))
            if node.name in _BLOCK_TAGS:
                current.end_block()
                pending.append(_END_BLOCK)
            pending.extend(reversed(node.contents))
    scopes[-1].current.end_block()
    return records


_END_BLOCK = object()
_END_SECTION = object()
