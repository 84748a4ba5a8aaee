"""Publish a local store to shared storage (readers open it through published.py).

Publishing copies a closed store into ROOT as a verified, immutable version and switches a
symlink to it atomically::

    ROOT/
      books -> books.versions/20261121T181500.123456Z-1a2b3c4d   (relative symlink)
      books.versions/
        20261121T181500.123456Z-1a2b3c4d/
          manifest.json  chroma/...  bm25/...  CHECKSUMS.sha256
      .books.lock                       (file lock: one publisher per name at a time)

Re-publishing unchanged content still makes a new version: opening the store to count its
vectors rewrites parts of chroma.sqlite3, so "unchanged" could not be detected reliably,
and a spare version costs only disk until pruning removes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.errors import ParameterError, StoreError
from ragbatch.store.check import check_store
from ragbatch.store.filetree import CHECKSUMS, VERSIONS_SUFFIX, checksums_text, copy_tree, fsync_dir, hash_tree, write_durably
from ragbatch.store.lexical import DIR_NAME as BM25_DIR
from ragbatch.store.local import CHROMA_DIR
from ragbatch.store.manifest import MANIFEST, missing_store

# What a store is made of, and so all that is published: not its lock file, nor what an
# interrupted write left beside these (temporary files and folders).
STORE_PARTS = (MANIFEST, CHROMA_DIR, BM25_DIR)


def publish(store: str | Path, root: str | Path, keep: int = 3) -> Path:
    """Copy `store` into ROOT/<name>.versions/<version>, verify it, point ROOT/<name> at it.

    Returns the new version folder. Keeps the newest `keep` versions.
    """
    store, root = Path(store), Path(root)
    if keep < 1:
        raise ParameterError("keep", keep, "must be at least 1")
    if not store.is_dir():
        raise missing_store(store)
    name = store.resolve().name
    check_store(store)
    source_hashes = hash_tree(store, only=STORE_PARTS)  # only after Chroma's client has closed
    root.mkdir(parents=True, exist_ok=True)
    link = root / name
    versions = root / (name + VERSIONS_SUFFIX)
    from filelock import FileLock

    # filelock takes flock(), which Linux emulates with POSIX locks on NFS: it holds across machines too.
    with FileLock(root / f".{name}.lock"):
        _refuse_foreign(link, name)
        _remove_leftovers(root, name)
        staged = _stage_copy(store, root, name, source_hashes)
        version = versions / _version_name(source_hashes)
        versions.mkdir(exist_ok=True)
        os.rename(staged, version)
        fsync_dir(versions)
        fsync_dir(root)
        _switch_link(link, version)
        _prune(versions, keep, keep_also=version)
    return version


def _stage_copy(store: Path, root: Path, name: str, source_hashes: dict[str, str]) -> Path:
    """Copy the store into ROOT/.tmp-<name>-<random>, verified and fsynced; return it."""
    staged = root / f".tmp-{name}-{secrets.token_hex(8)}"
    staged.mkdir()
    try:
        copy_tree(store, staged, only=STORE_PARTS)
        copy_hashes = hash_tree(staged)
        for rel in sorted(source_hashes.keys() | copy_hashes.keys()):
            if source_hashes.get(rel) != copy_hashes.get(rel):
                raise StoreError(f"{staged / rel}: copy differs from {store / rel}; was the store written to during publish?")
        write_durably(staged / CHECKSUMS, checksums_text(source_hashes))
        fsync_dir(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _version_name(hashes: dict[str, str]) -> str:
    # Microseconds keep names unique and time-sorted; the content hash tells versions apart.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    digest = hashlib.sha256(checksums_text(hashes).encode()).hexdigest()[:8]
    return f"{stamp}-{digest}"


def _refuse_foreign(link: Path, name: str) -> None:
    """Refuse to replace ROOT/<name> unless it is missing or a link made by publish."""
    if not os.path.lexists(link):
        return
    if link.is_symlink():
        target = Path(os.readlink(link))
        if target.parent == Path(name + VERSIONS_SUFFIX):
            return
    raise StoreError(f"{link}: exists and is not a link made by publish; move it away or publish to another root")


def _switch_link(link: Path, version: Path) -> None:
    """Point `link` at `version` with one atomic rename, so readers see old or new, never neither."""
    tmp_link = link.parent / f".{link.name}.link-{secrets.token_hex(8)}"
    os.symlink(os.path.relpath(version, link.parent), tmp_link)
    os.replace(tmp_link, link)
    fsync_dir(link.parent)


def _prune(versions: Path, keep: int, keep_also: Path) -> None:
    """Delete all but the newest `keep` versions; never `keep_also` or the link's target."""
    link = versions.parent / versions.name[: -len(VERSIONS_SUFFIX)]
    current = Path(os.path.realpath(link)).name
    names = sorted(p.name for p in versions.iterdir() if not p.name.startswith("."))
    for old in names[:-keep]:
        if old in (current, keep_also.name):
            continue
        # Rename first: a reader copying this version then fails on its next open and
        # retries, instead of copying a half-deleted folder.
        trash = versions.parent / f".tmp-{link.name}-{secrets.token_hex(8)}"
        os.rename(versions / old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    fsync_dir(versions)


def _remove_leftovers(root: Path, name: str) -> None:
    """Remove temp folders and links of crashed publishes (safe: we hold the lock)."""
    pattern = re.compile(rf"^(\.tmp-{re.escape(name)}|\.{re.escape(name)}\.link)-[0-9a-f]{{16}}$")
    for entry in root.iterdir():
        if pattern.match(entry.name):
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)
