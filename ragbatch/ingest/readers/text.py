"""Reading a file as UTF-8 text, tidying lines and titles, and plain-text sections."""

from __future__ import annotations

import re

from ragbatch.errors import InputFileError

TITLE_MAX_CHARS = 100
# A line of text longer than this is data, not prose (a dump, minified JSON, base64);
# chunking one takes memory in proportion (3 GB for a 20 MB line), so it is refused.
MAX_LINE_CHARS = 2**20


def read_utf8_text(path: str, shown: str) -> str:
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
        raise InputFileError(shown, "binary file (contains NUL bytes); ragbatch reads UTF-8 text, HTML and Markdown")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputFileError(
            f"{shown}:{line}",
            f"not UTF-8 text (invalid byte 0x{data[error.start]:02x} at offset {error.start}); convert it to UTF-8 or remove it",
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InputFileError(shown, "empty file" if not text else "empty file (only whitespace)")
    return text


def tidy_line(line: str) -> str:
    return " ".join(line.split())


def short_title(text: str) -> str:
    title = tidy_line(text)
    return title if len(title) <= TITLE_MAX_CHARS else title[: TITLE_MAX_CHARS - 1].rstrip() + "…"


def plain_text_section(text: str) -> tuple[str, str, str, list[int]]:
    """One section per .txt file: paragraphs split on blank lines, else one per line.

    Also returns, for every line of the tidied body, the number of the file line it
    came from (a blank line between paragraphs gets the next paragraph's), so that a
    chunk can be cited as `notes.txt#L120-L134`.
    """
    separator = r"\n[ \t]*\n"
    if re.search(separator, text.strip()):
        cuts = [(m.start(), m.end()) for m in re.finditer(separator, text)]
    else:
        cuts = [(m.start(), m.end()) for m in re.finditer("\n", text)]
    spans = zip([0] + [end for _, end in cuts], [start for start, _ in cuts] + [len(text)])
    tidied: list[str] = []
    numbers: list[int] = []
    line, previous = 1, 0
    for start, end in spans:
        line += text.count("\n", previous, start)
        previous = start
        kept = [(line + i, tidy_line(raw)) for i, raw in enumerate(text[start:end].split("\n"))]
        kept = [(number, tidy) for number, tidy in kept if tidy]
        if kept:
            if tidied:
                numbers.append(kept[0][0])  # the blank line between paragraphs
            tidied.append("\n".join(tidy for _, tidy in kept))
            numbers.extend(number for number, _ in kept)
    body = "\n\n".join(tidied)
    return "", short_title(body.split("\n", 1)[0]), body, numbers


def check_line_lengths(text: str, shown: str) -> None:
    """Refuse a text file with a line over MAX_LINE_CHARS, naming the line."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        if end - start > MAX_LINE_CHARS:
            line = text.count("\n", 0, start) + 1
            raise InputFileError(
                f"{shown}:{line}",
                f"a line of {end - start:,} characters with no line break; ragbatch reads text lines of up to {MAX_LINE_CHARS:,} "
                f"(is it data rather than text? wrap it, e.g. `fold -s -w 1000`)",
            )
        start = end + 1
