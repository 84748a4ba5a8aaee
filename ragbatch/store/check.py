"""Verify a store: what `publish` checks before it copies, and what `ragbatch check` reports.

Every damage found is one `StoreError` line that names the damaged part and the repair:
- the manifest (missing, not JSON, missing fields);
- Chroma's SQLite file (missing, or failing SQLite's integrity check);
- the vector count against the manifest;
- the HNSW vector index (its files deleted or damaged: Chroma then still counts every
  vector from SQLite but finds few of them, so sample vectors must find themselves);
- the BM25 index beside it (missing, unreadable, or out of step with the store).
A store whose vectors are on a Chroma server (server.py) has no SQLite file here:
its collection on the server is checked instead (reachable, its count, sample vectors).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ragbatch.errors import StoreError
from ragbatch.store.copies import COPIES_FILE, read_copies
from ragbatch.store.lexical import LexicalIndex
from ragbatch.store.local import CHROMA_DIR
from ragbatch.store.manifest import MANIFEST, Manifest, read_manifest
from ragbatch.store.vectors import open_vectors

# Vectors looked up and queried to prove the vector index holds them.
SAMPLE = 16

REINDEX = "re-index into a new store, or restore a published version (ROOT/NAME.versions/)"


@dataclass
class StoreHealth:
    store: str
    chunks: int
    embedder: str
    lexical: int | None  # chunks in the BM25 index; None for a store without one

    def as_json(self) -> dict:
        return {"store": self.store, "ok": True, "chunks": self.chunks, "embedder": self.embedder, "bm25_chunks": self.lexical}


def check_store(store: Path, lexical: bool = False) -> StoreHealth:
    """Raise one StoreError line for the first damage found; `lexical` checks BM25 too.

    Opens the store's Chroma folder, which writes to it: publish hashes afterwards."""
    store = Path(store)
    manifest = _manifest(store)
    if not manifest.server:
        sqlite_path = store / CHROMA_DIR / "chroma.sqlite3"
        if not sqlite_path.is_file():
            raise StoreError(f"{sqlite_path}: missing, so the store has no vectors; {REINDEX}")
        result = _sqlite_integrity(sqlite_path)
        if result != "ok":
            raise StoreError(f"{sqlite_path}: damaged (SQLite integrity check: {result}); {REINDEX}")
        _refuse_if_open_in_this_process(store / CHROMA_DIR)
    _check_vectors(store, manifest)
    _check_copies(store, manifest)
    chunks = _check_lexical(store, manifest) if lexical else None
    return StoreHealth(str(store), manifest.chunks, manifest.embedder.name, chunks)


def _manifest(store: Path) -> Manifest:
    path = store / MANIFEST
    if not path.exists():
        raise StoreError(f"{path}: missing; is {store} a store? ({REINDEX})")
    manifest = read_manifest(store)
    assert manifest is not None
    return manifest


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


def _check_vectors(store: Path, manifest: Manifest) -> None:
    """The collection (local or on its server) holds the manifest's count of vectors, and
    sample vectors find themselves."""
    repair = "re-index into a new store" if manifest.server else REINDEX
    try:
        vectors = open_vectors(store, manifest)  # unreachable, missing or foreign: one line
    except StoreError:
        if manifest.server:
            raise
        raise StoreError(f"{store / CHROMA_DIR}: cannot read collection '{manifest.collection}'; {REINDEX}") from None
    try:
        count = vectors.count()
        if count != manifest.vectors:
            raise StoreError(
                f"{store}: manifest says {manifest.vectors} distinct chunks but {_holder(vectors, manifest)} holds {count} vectors; "
                f"run `ragbatch index` on it again to finish an interrupted run, or {repair}"
            )
        damaged = f"{vectors.where}: its vector index (HNSW files) is damaged or missing"
        try:
            lost, sampled = vectors.lost_samples(SAMPLE)
        except Exception as e:  # noqa: BLE001 - chromadb raises InternalError for missing segments
            raise StoreError(f"{damaged} ({e}); {REINDEX}") from None
        if lost:
            raise StoreError(f"{damaged}: {lost} of {sampled} sample vectors are not found; {REINDEX}")
    finally:
        # Chroma 1.5 counts clients per path and stops the shared System on the last close(),
        # so clear_system_cache() is not needed (and would orphan other open clients).
        vectors.close()
        if not manifest.server:
            wait_until_released(store / CHROMA_DIR)


def _check_copies(store: Path, manifest: Manifest) -> None:
    """The copies file holds the manifest's count of copies."""
    copies = read_copies(store)  # unreadable: one line naming it
    if len(copies) != manifest.copies:
        raise StoreError(
            f"{store / COPIES_FILE}: holds {len(copies)} copies but the manifest {manifest.copies}; "
            "run `ragbatch index` on the store again to finish an interrupted run"
        )


def _holder(vectors, manifest: Manifest) -> str:
    return vectors.where if manifest.server else f"Chroma collection '{manifest.collection}'"


def _check_lexical(store: Path, manifest: Manifest) -> int:
    lexical = LexicalIndex.open(store)  # its errors name the damaged file and the repair
    if len(lexical) != manifest.vectors:
        repair = f"delete {store / 'bm25'} and run `ragbatch index` on the store again (BM25 is rebuilt from Chroma), or use {{retrieval}} dense"
        raise StoreError(f"{store / 'bm25'}: holds {len(lexical)} chunks but the store {manifest.vectors}; {repair}", refers=("retrieval",))
    return len(lexical)


def _refuse_if_open_in_this_process(chroma_dir: Path) -> None:
    """A client still open here (the indexer's, or one under another spelling of the path)
    could write while we copy, and copies taken during writes can be corrupt."""
    from chromadb.api.shared_system_client import SharedSystemClient

    for system in list(getattr(SharedSystemClient, "_identifier_to_system", {}).values()):
        settings = system.settings
        same = os.path.realpath(settings.persist_directory or "") == os.path.realpath(chroma_dir)
        if settings.is_persistent and same:
            raise StoreError(f"{chroma_dir}: a Chroma client in this process still has the store open; close() it before publishing")


def wait_until_released(chroma_dir: Path, timeout: float = 5.0) -> None:
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
