"""Publish a local store to shared storage (readers open it through published.py).

Publishing copies a closed store into ROOT as a verified, immutable version and switches a
symlink to it atomically::

    ROOT/
      books -> books.versions/20261121T181500.123456Z-1a2b3c4d   (relative symlink)
      books.versions/
        20261121T181500.123456Z-1a2b3c4d/
          manifest.json  chroma/...  bm25/...  CHECKSUMS.sha256
      .books.lock                       (file lock: one publisher per name at a time)

A name belongs to one store: publishing another store under it is refused unless forced
(two projects' `stores/default` would otherwise replace each other, and every server of
the name would switch to the other store). Publishing a store whose content the name's
version already holds copies nothing: "unchanged" is decided by the records themselves
(content_digest), not by file bytes, which every open of Chroma rewrites.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.errors import ParameterError, StoreError
from ragbatch.store.check import check_store, wait_until_released
from ragbatch.store.copies import COPIES_FILE, read_copies
from ragbatch.store.filetree import CHECKSUMS, VERSIONS_SUFFIX, checksums_text, copy_tree, fsync_dir, hash_tree, write_durably
from ragbatch.store.lexical import DIR_NAME as BM25_DIR
from ragbatch.store.local import CHROMA_DIR
from ragbatch.store.manifest import MANIFEST, Manifest, missing_store, read_manifest, require_manifest, write_manifest
from ragbatch.store.vectors import open_vectors

# A published name: a folder name on shared storage, never a hidden or a relative one.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# What a store is made of, and so all that is published: not its lock file, nor what an
# interrupted write left beside these (temporary files and folders).
STORE_PARTS = (MANIFEST, CHROMA_DIR, BM25_DIR, COPIES_FILE)


@dataclass
class Published:
    version: Path  # the version ROOT/NAME points at
    link: Path  # ROOT/NAME
    unchanged: bool = False  # the store held what that version holds: nothing was copied


def publish(store: str | Path, root: str | Path, keep: int = 3, name: str | None = None, force: bool = False) -> Published:
    """Copy `store` into ROOT/<name>.versions/<version>, verify it, point ROOT/<name> at it.

    `name` defaults to the store folder's name. A name published from another store is
    refused unless `force`; a store whose content is what the name's version already holds
    is not copied again (`unchanged`). Keeps the newest `keep` versions. The caller holds
    the store's lock (locks.store_lock): publish may record the store's identity in it.
    """
    store, root = Path(store), Path(root)
    if keep < 1:
        raise ParameterError("keep", keep, "must be at least 1")
    if not store.is_dir():
        raise missing_store(store)
    name = name or store.resolve().name
    if not NAME.fullmatch(name):
        raise ParameterError("name", name, "letters, digits, '.', '_' and '-' only, not starting with '.'")
    check_store(store)
    manifest = _with_identity(store)
    digest = content_digest(store, manifest)  # opens the collection: before hashing its files
    root.mkdir(parents=True, exist_ok=True)
    link = root / name
    versions = root / (name + VERSIONS_SUFFIX)
    from filelock import FileLock

    # filelock takes flock(), which Linux emulates with POSIX locks on NFS: it holds across machines too.
    with FileLock(root / f".{name}.lock"):
        _refuse_foreign(link, name)
        current = _current_manifest(link)
        if current is not None and not current.same_store(manifest) and not force:
            made = f"from {current.origin}" if current.origin else f"from a store made {current.created}"
            raise StoreError(
                f"{link}: publishes another store ({made}), not {store}; publish under another {{name}}, or pass {{force}} to replace it",
                refers=("name", "force"),
            )
        if current is not None and current.content == digest:
            return Published(Path(os.path.realpath(link)), link, unchanged=True)
        manifest.content = digest
        write_manifest(store, manifest)
        source_hashes = hash_tree(store, only=STORE_PARTS)  # only after Chroma's client has closed
        _remove_leftovers(root, name)
        staged = _stage_copy(store, root, name, source_hashes)
        version = versions / _version_name(source_hashes)
        versions.mkdir(exist_ok=True)
        os.rename(staged, version)
        fsync_dir(versions)
        fsync_dir(root)
        _switch_link(link, version)
        _prune(versions, keep, keep_also=version)
    return Published(version, link)


def _with_identity(store: Path) -> Manifest:
    """The store's manifest, given a store id and origin if it was made before they were kept."""
    manifest = require_manifest(store)
    if not manifest.store_id:
        manifest.store_id, manifest.origin = uuid.uuid4().hex, origin_of(store)
        write_manifest(store, manifest)
    return manifest


def origin_of(store: Path) -> str:
    return f"{socket.gethostname()}:{Path(store).resolve()}"


def _current_manifest(link: Path) -> Manifest | None:
    """The manifest of the version `link` points at, if any."""
    if not os.path.lexists(link) or not (link / MANIFEST).is_file():
        return None
    return read_manifest(link)


def content_digest(store: Path, manifest: Manifest) -> str:
    """What the store holds, as one hash: its embedder and chunking, every record (id, text
    and fields) and every copy. Its files are no measure: opening Chroma rewrites its SQLite
    file, so the same content hashes differently after every read. Records are summed
    (their order in Chroma is not fixed), page by page, in memory that does not grow."""
    total = 0
    vectors = open_vectors(store, manifest)
    try:
        for chunk_id, text, fields in vectors.records():
            record = json.dumps([chunk_id, text, fields], sort_keys=True, ensure_ascii=False).encode()
            total = (total + int.from_bytes(hashlib.sha256(record).digest(), "big")) % 2**256
    finally:
        vectors.close()
        if not manifest.server:
            wait_until_released(store / CHROMA_DIR)
    copies = json.dumps(sorted(read_copies(store).items()), sort_keys=True, ensure_ascii=False)
    settings = json.dumps([manifest.embedder.as_dict(), manifest.chunking.as_dict()], sort_keys=True)
    return hashlib.sha256(f"{settings}\n{total:064x}\n{copies}".encode()).hexdigest()


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
