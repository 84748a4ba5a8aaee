"""Markdown files into sections, split at headings, with GitHub's heading anchors."""

from __future__ import annotations

import re

from ragbatch.errors import InputFileError
from ragbatch.readers.text import short_title, tidy_line


def markdown_sections(text: str, shown: str) -> list[tuple[str, str, str]]:
    """Split at headings (found by markdown-it, so a `# comment` in a code fence is not one).

    Each section keeps its Markdown source; its text starts with the heading's plain text.
    """
    from markdown_it import MarkdownIt

    lines = _without_front_matter(text).split("\n")
    tokens = MarkdownIt("commonmark").parse("\n".join(lines))
    headings = []  # (first line, line after the heading, plain text)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            headings.append((token.map[0], token.map[1], _inline_plain_text(tokens[index + 1])))

    slugs = _GitHubSlugs()
    sections = []
    preamble = _tidy_markdown("\n".join(lines[: headings[0][0] if headings else len(lines)]))
    if preamble:
        sections.append(("", short_title(preamble.split("\n", 1)[0]), preamble))
    for number, (_, end, title) in enumerate(headings):
        anchor = slugs.slug(title)
        stop = headings[number + 1][0] if number + 1 < len(headings) else len(lines)
        body = _tidy_markdown("\n".join(lines[end:stop]))
        if body:  # a heading directly followed by a sub-heading gives no record of its own
            sections.append((anchor, short_title(title) or anchor,
                             f"{title}\n\n{body}" if title else body))
    if not sections:
        raise InputFileError(shown, "no text found (only headings or markup)")
    return sections


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
    return tidy_line("".join(parts))


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
