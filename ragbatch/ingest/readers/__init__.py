"""Find input files and read them into section records.

`discover(paths)` turns the PATHs given on the command line (files, directories, globs)
into a list of files to read. `read_file(file)` turns one file into section records,
plain dicts of str/int so they can cross into Ray Data workers:

    {"path", "root", "source", "title", "section", "text", "page_title", "headings", "anchors", "line_numbers"}

`source` is the file's path relative to the indexed root, plus `#anchor` for a section
of an HTML page (its `id`) or of a Markdown file (its GitHub slug). `page_title` is the
page's <title> (HTML) or first heading (Markdown), "" for text; `headings` is the path of
section titles from the outermost section down to the record's own; `anchors` are the
other link targets inside an HTML section (Sphinx labels, glossary terms, API objects:
`#term-Task`), so a link to one of them can be matched to the section holding it. `line_numbers`
(plain text only, else empty) gives the file line of every line of `text`. In a record's text,
blocks (paragraphs, list items, headings) are separated by a blank line, as the
paragraphs of a .txt file are; a code block keeps its own lines.

One module per job: discovery.py finds files; text.py reads UTF-8 and plain text; html.py
and markdown.py split those formats into sections. bs4, lxml and markdown-it are imported
inside the functions that use them, so that importing this package stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from ragbatch.errors import InputFileError
from ragbatch.ingest.readers.discovery import HTML_SUFFIXES, MARKDOWN_SUFFIXES, SUPPORTED_SUFFIXES, Discovery, discover
from ragbatch.ingest.readers.html import html_sections
from ragbatch.ingest.readers.markdown import markdown_sections
from ragbatch.ingest.readers.text import check_line_lengths, plain_text_section, read_utf8_text

__all__ = ["SUPPORTED_SUFFIXES", "Discovery", "discover", "read_file"]


def read_file(file: dict) -> list[dict]:
    """Read one discovered file into section records, in document order."""
    path = file["path"]
    shown = _shown_path(path)
    suffix = Path(path).suffix.lower()
    text = read_utf8_text(path, shown)
    page_title: str = ""
    anchors: dict[str, list[str]] = {}
    line_numbers: list[int] = []
    if suffix in HTML_SUFFIXES:
        sections, page_title, anchors = html_sections(text, shown)
    elif suffix in MARKDOWN_SUFFIXES:
        check_line_lengths(text, shown)
        sections, page_title = markdown_sections(text, shown)
    elif suffix == ".txt":
        check_line_lengths(text, shown)
        anchor, title, body, line_numbers = plain_text_section(text)
        sections = [(anchor, title, body, [])]
    else:
        raise InputFileError(shown, f"unsupported type {suffix or 'without extension'}; ragbatch reads {', '.join(sorted(SUPPORTED_SUFFIXES))}")
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
            "line_numbers": line_numbers,
        }
        for number, (anchor, title, body, headings) in enumerate(sections)
    ]


def _shown_path(path: str) -> str:
    """The path as the user most likely typed it: relative to the working directory if inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
