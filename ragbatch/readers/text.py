"""Reading a file as UTF-8 text, tidying lines and titles, and plain-text sections."""

from __future__ import annotations

import re

from ragbatch.errors import InputFileError

TITLE_MAX_CHARS = 100


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


def plain_text_section(text: str) -> tuple[str, str, str]:
    """One section per .txt file: paragraphs split on blank lines, else one per line."""
    if re.search(r"\n[ \t]*\n", text.strip()):
        paragraphs = re.split(r"\n[ \t]*\n", text)
    else:
        paragraphs = text.split("\n")
    tidied = []
    for paragraph in paragraphs:
        lines = [tidy_line(line) for line in paragraph.split("\n")]
        if any(lines):
            tidied.append("\n".join(line for line in lines if line))
    body = "\n\n".join(tidied)
    return "", short_title(body.split("\n", 1)[0]), body
