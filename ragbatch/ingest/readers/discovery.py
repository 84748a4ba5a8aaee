"""Turn the PATHs given on the command line (files, directories, globs) into files to read."""

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


@dataclass
class Discovery:
    files: list[dict] = field(default_factory=list)
    skipped: list[InputFileError] = field(default_factory=list)  # files of a type ragbatch does not read
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
    _name_sources(found.files)
    return found


def _name_sources(files: list[dict]) -> None:
    """Each file's source path (its `relpath`), relative to the common root of everything
    indexed: one directory's files are named inside it, one file by its name, and the
    files of several arguments by their paths under a folder they share, so `a/notes.txt`
    and `b/notes.txt` stay two sources (and two sets of chunk ids)."""
    if not files:
        return
    bases = {os.path.dirname(f["path"]) if f["root"] == f["path"] else f["root"] for f in files}
    common = os.path.commonpath(sorted(bases))
    for f in files:
        f["relpath"] = Path(os.path.relpath(f["path"], common)).as_posix()


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
        _add_file(os.path.join(directory, relpath), directory, found, seen)


def _add_file(shown: str, root: str, found: Discovery, seen: set[str]) -> None:
    suffix = Path(shown).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        found.skipped.append(InputFileError(shown, f"skipped (unsupported type {suffix or 'without extension'})"))
        return
    if not os.path.isfile(shown):  # a FIFO would block the read forever; a link may loop or dangle
        found.errors.append(InputFileError(shown, "not a regular file (a FIFO, device, or a link that loops or points nowhere)"))
        return
    key = os.path.realpath(shown)  # the same file reached twice (./a.txt, a.txt, a link)
    if key in seen:
        return
    seen.add(key)
    found.files.append({"path": os.path.abspath(shown), "root": os.path.abspath(root), "relpath": ""})
