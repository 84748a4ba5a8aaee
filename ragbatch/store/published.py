"""Open published stores safely: a verified local copy of the version a link points to.

Readers never open a published version in place: opening a Chroma store writes to its
SQLite file. `resolve_store` copies the version into the local cache (locations.cache_dir),
checks it against its CHECKSUMS.sha256 and returns the cached path. Publishing is
publish.py's job.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from ragbatch.errors import StoreError
from ragbatch.locations import cache_dir as ragbatch_cache
from ragbatch.store.filetree import CHECKSUMS, VERSIONS_SUFFIX, copy_tree, hash_tree
from ragbatch.store.manifest import require_store_path


def is_published(path: str | Path) -> bool:
    """True for a link made by publish (ROOT/<name>) or a version folder it points to."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if not real.parent.name.endswith(VERSIONS_SUFFIX):
        return False
    # A link is published even if its target was just pruned: resolve_store then retries.
    return path.is_symlink() or (real / CHECKSUMS).is_file()


def resolve_store(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Return a path a reader may open with chromadb.

    A plain local store is returned unchanged. A published store is resolved to one
    version, copied into the local cache and verified; the cached copy is returned.
    """
    path = Path(path)
    require_store_path(path)
    if not is_published(path):
        return path
    cache = ragbatch_cache(cache_dir)
    for _attempt in (1, 2):
        version = Path(os.path.realpath(path))  # resolve once; never follow the link again
        try:
            return _cache_version(version, cache)
        except FileNotFoundError as e:
            if version.is_dir():
                raise StoreError(f"{e.filename}: missing from published version {version}") from None
            # Pruned while we copied it: the link now points at a newer version.
    raise StoreError(f"{path}: versions were removed twice while copying them; try again")


# Verified copies kept per published store: the newest, and a few older ones that readers
# started before a publish may still be using.
CACHED_VERSIONS = 3


def _cache_version(version: Path, cache: Path) -> Path:
    """Copy `version` into CACHE/stores/<name>/<version> once, verified; return the copy.
    Older copies of the same store beyond CACHED_VERSIONS are removed."""
    name = version.parent.name[: -len(VERSIONS_SUFFIX)]
    cached = cache / "stores" / name / version.name
    if cached.is_dir():
        # Verified when it was made; readers have opened it since, so it no longer hashes equal.
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    staged = cached.parent / f".tmp-{version.name}-{secrets.token_hex(8)}"
    staged.mkdir()
    try:
        copy_tree(version, staged)
        _verify_checksums(staged, version)
        try:
            os.rename(staged, cached)
        except OSError:
            if not cached.is_dir():
                raise
            shutil.rmtree(staged, ignore_errors=True)  # another reader finished it first
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    _prune_cache(cached.parent, keep=cached)
    return cached


def _prune_cache(folder: Path, keep: Path) -> None:
    """Remove all but the newest CACHED_VERSIONS copies (version names sort by time), and
    copies interrupted over an hour ago."""
    versions = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in versions[:-CACHED_VERSIONS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for staged in folder.glob(".tmp-*"):
        if time.time() - staged.stat().st_mtime > 3600:
            shutil.rmtree(staged, ignore_errors=True)


def _verify_checksums(copy: Path, source: Path) -> None:
    """Check every file of `copy` against its CHECKSUMS.sha256; name `source`'s file if not."""
    if not (copy / CHECKSUMS).is_file():
        raise StoreError(f"{source}: no {CHECKSUMS}; not a complete published version")
    expected = {}
    for line in (copy / CHECKSUMS).read_text().splitlines():
        digest, _, rel = line.partition("  ")
        expected[rel] = digest
    actual = hash_tree(copy)
    actual.pop(CHECKSUMS)
    for rel in sorted(expected.keys() | actual.keys()):
        if rel not in actual:
            raise StoreError(f"{source / rel}: listed in {CHECKSUMS} but missing")
        if rel not in expected:
            raise StoreError(f"{source / rel}: not listed in {CHECKSUMS}")
        if actual[rel] != expected[rel]:
            raise StoreError(f"{source / rel}: checksum mismatch; the published copy is corrupt")
