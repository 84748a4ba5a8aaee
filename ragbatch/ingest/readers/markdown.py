"""Markdown files into sections, split at headings, with GitHub's heading anchors."""

from __future__ import annotations

import re
import unicodedata

from ragbatch.errors import InputFileError
from ragbatch.ingest.readers.text import short_title, tidy_line


def markdown_sections(text: str, shown: str) -> tuple[list[tuple[str, str, str, list[str]]], str]:
    """Split at headings (found by markdown-it, so a `# comment` in a code fence is not one).

    Each section keeps its Markdown source; its text starts with the heading's plain text.
    A leading YAML block (---/---) is metadata, not text. Anchors are GitHub's: the
    anchors plugin takes a heading's text as GitHub does and numbers repeats -1, -2...
    """
    from markdown_it import MarkdownIt
    from mdit_py_plugins.anchors import anchors_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    parser = MarkdownIt("commonmark").use(front_matter_plugin).use(anchors_plugin, max_level=6, slug_func=github_slug)
    tokens = parser.parse(text)
    lines = text.split("\n")
    start = 0  # first line after the front matter
    headings = []  # (first line, line after the heading, anchor, plain text, heading path)
    open_levels: list[tuple[int, str]] = []  # (level, title) of the headings enclosing this one
    for index, token in enumerate(tokens):
        if token.type == "front_matter":
            start = token.map[1]
        elif token.type == "heading_open" and token.map:
            level, title = int(token.tag[1:]), _inline_plain_text(tokens[index + 1])
            open_levels = [(lv, t) for lv, t in open_levels if lv < level] + [(level, title)]
            headings.append((token.map[0], token.map[1], token.attrGet("id") or "", title, [t for _, t in open_levels if t]))

    sections: list[tuple[str, str, str, list[str]]] = []
    preamble = _tidy_markdown("\n".join(lines[start : headings[0][0] if headings else len(lines)]))
    if preamble:
        sections.append(("", short_title(preamble.split("\n", 1)[0]), preamble, []))
    for number, (_, end, anchor, title, path) in enumerate(headings):
        stop = headings[number + 1][0] if number + 1 < len(headings) else len(lines)
        body = _tidy_markdown("\n".join(lines[end:stop]))
        if body:  # a heading directly followed by a sub-heading gives no record of its own
            sections.append((anchor, short_title(title) or anchor, f"{title}\n\n{body}" if title else body, path))
    if not sections:
        raise InputFileError(shown, "no text found (only headings or markup)")
    page_title = next((title for _, _, _, title, path in headings if len(path) == 1 and title), "")
    return sections, page_title


def github_slug(title: str) -> str:
    """GitHub's anchor for a heading's text: lowercase; letters, marks, decimal and letter
    numbers, connector punctuation and '-' kept; each space becomes '-'; all else goes.

    Not the anchors plugin's own slug function: its `\\w` drops combining marks (à written
    as a + U+0300, Hindi vowel signs) and '‿', which GitHub keeps, and keeps ², ½ and other
    numbers, which GitHub drops. The rule is github-slugger's, whose test fixtures are read
    back from pages GitHub rendered. (GitHub also keeps a few alphabetic symbols such as Ⓐ;
    Python has no test for that Unicode property.)
    """
    kept = []
    for char in title.lower():
        category = unicodedata.category(char)
        if char == " ":
            kept.append("-")
        elif char == "-" or category[0] in "LM" or category in ("Nd", "Nl", "Pc"):
            kept.append(char)
    return "".join(kept)


def _inline_plain_text(inline) -> str:
    """The text a heading renders to, without its markup (its title)."""
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_plain_text(child))
    return tidy_line("".join(parts))


def _tidy_markdown(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)
