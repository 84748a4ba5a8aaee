"""Publish a local store to shared storage (readers open it through store_cache.py).

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
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from ragbatch.errors import RagbatchError, StoreError
from ragbatch.filetree import CHECKSUMS, VERSIONS_SUFFIX, checksums_text, copy_tree, fsync_dir, hash_tree, write_durably
from ragbatch.manifest import missing_store


def publish(store: str | Path, root: str | Path, keep: int = 3) -> Path:
    """Copy `store` into ROOT/<name>.versions/<version>, verify it, point ROOT/<name> at it.

    Returns the new version folder. Keeps the newest `keep` versions.
    """
    store, root = Path(store), Path(root)
    if keep < 1:
        raise RagbatchError(f"publish: keep={keep}, must be at least 1")
    if not store.is_dir():
        raise missing_store(store)
    name = store.resolve().name
    _check_store_integrity(store)
    source_hashes = hash_tree(store)  # only after Chroma's client has closed
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


def _check_store_integrity(store: Path) -> None:
    """Refuse a store whose manifest, SQLite file or vector count is not as it should be."""
    manifest_path = store / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{manifest_path}: missing; is {store} a store?") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{manifest_path}: unreadable ({e})") from None
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("chunks"), int)
        or not isinstance(manifest.get("collection"), str)
    ):
        raise StoreError(f"{manifest_path}: needs an integer 'chunks' and a string 'collection'")
    sqlite_path = store / "chroma" / "chroma.sqlite3"
    if not sqlite_path.is_file():
        raise StoreError(f"{sqlite_path}: missing; the store has no Chroma database")
    result = _sqlite_integrity(sqlite_path)
    if result != "ok":
        raise StoreError(f"{sqlite_path}: SQLite integrity check failed: {result}")
    count = _chroma_count(store / "chroma", manifest["collection"])
    if count != manifest["chunks"]:
        raise StoreError(
            f"{store}: manifest says {manifest['chunks']} chunks but Chroma collection "
            f"'{manifest['collection']}' holds {count} vectors; re-index before publishing"
        )


def _sqlite_integrity(path: Path) -> str:
    # Read-only URI, so the check itself cannot modify the file we are about to hash.
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            rows = con.execute("PRAGMA integrity_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    return "; ".join(str(row[0]) for row in rows)


def _chroma_count(chroma_dir: Path, collection: str) -> int:
    import chromadb

    _refuse_if_open_in_this_process(chroma_dir)
    client = chromadb.PersistentClient(path=str(chroma_dir))
    try:
        try:
            return client.get_collection(collection).count()
        except Exception as e:  # chromadb raises NotFoundError (1.x) or ValueError (older)
            raise StoreError(f"{chroma_dir}: cannot read collection '{collection}' ({e})") from None
    finally:
        # Chroma 1.5 counts clients per path and stops the shared System on the last close(),
        # so clear_system_cache() is not needed (and would orphan other open clients).
        client.close()
        _wait_until_files_released(chroma_dir)


def _refuse_if_open_in_this_process(chroma_dir: Path) -> None:
    """A client still open here (the indexer's, or one under another spelling of the path)
    could write while we copy, and copies taken during writes can be corrupt."""
    from chromadb.api.shared_system_client import SharedSystemClient

    for system in list(getattr(SharedSystemClient, "_identifier_to_system", {}).values()):
        settings = system.settings
        same = os.path.realpath(settings.persist_directory or "") == os.path.realpath(chroma_dir)
        if settings.is_persistent and same:
            raise StoreError(
                f"{chroma_dir}: a Chroma client in this process still has the store open; "
                "close() it before publishing"
            )


def _wait_until_files_released(chroma_dir: Path, timeout: float = 5.0) -> None:
    # close() returns before Chroma's background threads have closed their SQLite
    # connections (seen in 1.5.9); hash only once this process holds no file there.
    if not Path("/proc/self/fd").is_dir():
        return  # not Linux: nothing to watch
    prefix = str(chroma_dir.resolve()) + os.sep
    deadline = time.monotonic() + timeout
    while _process_holds_files_under(prefix):
        if time.monotonic() > deadline:
            raise StoreError(f"{chroma_dir}: Chroma still holds its files {timeout:.0f} s after close()")
        time.sleep(0.01)


def _process_holds_files_under(prefix: str) -> bool:
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(prefix):
                return True
        except OSError:
            pass  # closed meanwhile
    return False


def _stage_copy(store: Path, root: Path, name: str, source_hashes: dict[str, str]) -> Path:
    """Copy the store into ROOT/.tmp-<name>-<random>, verified and fsynced; return it."""
    staged = root / f".tmp-{name}-{secrets.token_hex(8)}"
    staged.mkdir()
    try:
        copy_tree(store, staged)
        copy_hashes = hash_tree(staged)
        for rel in sorted(source_hashes.keys() | copy_hashes.keys()):
            if source_hashes.get(rel) != copy_hashes.get(rel):
                raise StoreError(
                    f"{staged / rel}: copy differs from {store / rel}; was the store written "
                    "to during publish?"
                )
        write_durably(staged / CHECKSUMS, checksums_text(source_hashes))
        fsync_dir(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _version_name(hashes: dict[str, str]) -> str:
    # Microseconds keep names unique and time-sorted; the content hash tells versions apart.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
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
    raise StoreError(
        f"{link}: exists and is not a link made by publish; move it away or publish to another root"
    )


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
