"""Folder trees copied, hashed and fsynced, and the names a published store uses: what the
publisher (publish.py) and the readers' verified copies (published.py) share."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ragbatch.errors import StoreError

CHECKSUMS = "CHECKSUMS.sha256"  # in every published version: "<sha256>  <relative path>" lines
VERSIONS_SUFFIX = ".versions"  # ROOT/<name>.versions/ holds the versions of ROOT/<name>
_CHUNK = 1 << 20


def _raise(error: OSError) -> None:
    raise error


def _walk(top: Path, only: tuple[str, ...] | None):
    """os.walk of `top`, limited to the top-level entries named in `only` (all if None)."""
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        if only is not None and Path(dirpath) == Path(top):
            dirnames[:] = [d for d in dirnames if d in only]
            filenames = [f for f in filenames if f in only]
        yield dirpath, dirnames, filenames


def hash_tree(top: Path, only: tuple[str, ...] | None = None) -> dict[str, str]:
    """sha256 of every file under `top` (or under its entries named in `only`), keyed by its
    relative POSIX path, sorted."""
    hashes = {}
    for dirpath, dirnames, filenames in _walk(top, only):
        dirnames.sort()
        for entry in dirnames + filenames:
            # os.walk lists a symlinked folder among dirnames and never enters it.
            if os.path.islink(os.path.join(dirpath, entry)) or "\n" in entry:
                raise StoreError(f"{Path(dirpath) / entry}: symlinks and newlines in names cannot be published")
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            hashes[path.relative_to(top).as_posix()] = _sha256(path)
    return hashes


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checksums_text(hashes: dict[str, str]) -> str:
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(hashes.items()))


def copy_tree(src: Path, dst: Path, only: tuple[str, ...] | None = None) -> None:
    """Copy every folder and file under `src` (or under its entries named in `only`) into
    the existing `dst`, fsyncing all of them."""
    for dirpath, dirnames, filenames in _walk(src, only):
        here = dst / Path(dirpath).relative_to(src)
        for d in dirnames:
            (here / d).mkdir()
        for fname in filenames:
            with open(Path(dirpath) / fname, "rb") as fin, open(here / fname, "wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
                fout.flush()
                os.fsync(fout.fileno())
    for dirpath, _, _ in os.walk(dst, onerror=_raise):
        fsync_dir(Path(dirpath))


def write_durably(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
