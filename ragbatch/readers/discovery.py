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
