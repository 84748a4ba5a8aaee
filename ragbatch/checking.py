"""Verify a store: what `publish` checks before it copies, and what `ragbatch check` reports.

Every damage found is one `StoreError` line that names the damaged part and the repair:
- the manifest (missing, not JSON, missing fields);
- Chroma's SQLite file (missing, or failing SQLite's integrity check);
- the vector count against the manifest;
- the HNSW vector index (its files deleted or damaged: Chroma then still counts every
  vector from SQLite but finds few of them, so sample vectors must find themselves);
- the BM25 index beside it (missing, unreadable, or out of step with the store).
A store whose vectors are on a Chroma server (chroma_server.py) has no SQLite file here:
its collection on the server is checked instead (reachable, its count, sample vectors).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ragbatch.errors import StoreError

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

    Opens the store's Chroma folder, which writes to it (FACTS): publish hashes afterwards."""
    store = Path(store)
    manifest = _manifest(store)
    if manifest.get("chroma_url"):
        _check_server_vectors(store, manifest)
        chunks = _check_lexical(store, manifest) if lexical else None
        return StoreHealth(str(store), manifest["chunks"], manifest.get("embedder", {}).get("name", "?"), chunks)
    sqlite_path = store / "chroma" / "chroma.sqlite3"
    if not sqlite_path.is_file():
        raise StoreError(f"{sqlite_path}: missing, so the store has no vectors; {REINDEX}")
    result = _sqlite_integrity(sqlite_path)
    if result != "ok":
        raise StoreError(f"{sqlite_path}: damaged (SQLite integrity check: {result}); {REINDEX}")
    _check_vectors(store, manifest)
    chunks = _check_lexical(store, manifest) if lexical else None
    return StoreHealth(str(store), manifest["chunks"], manifest.get("embedder", {}).get("name", "?"), chunks)


def _manifest(store: Path) -> dict:
    path = store / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing; is {store} a store? ({REINDEX})") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable ({e}); restore it from a published version, or re-index into a new store") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("chunks"), int) or not isinstance(manifest.get("collection"), str):
        raise StoreError(f"{path}: needs an integer 'chunks' and a string 'collection'; restore it from a published version")
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


def _check_vectors(store: Path, manifest: dict) -> None:
    import chromadb

    chroma_dir = store / "chroma"
    collection = manifest["collection"]
    _refuse_if_open_in_this_process(chroma_dir)
    client = chromadb.PersistentClient(path=str(chroma_dir))
    try:
        try:
            chroma = client.get_collection(collection)
            count = chroma.count()
        except Exception as e:  # chromadb raises NotFoundError (1.x) or ValueError (older)
            raise StoreError(f"{chroma_dir}: cannot read collection '{collection}' ({e}); {REINDEX}") from None
        _require_count(store, manifest, count, f"Chroma collection '{collection}'", REINDEX)
        _sample_finds_itself(chroma, count, chroma_dir)
    finally:
        # Chroma 1.5 counts clients per path and stops the shared System on the last close(),
        # so clear_system_cache() is not needed (and would orphan other open clients).
        client.close()
        _wait_until_files_released(chroma_dir)


def _check_server_vectors(store: Path, manifest: dict) -> None:
    """A store whose vectors are on a Chroma server (chroma_server.py): its collection there,
    its count against the manifest, and sample vectors finding themselves."""
    from ragbatch.store import open_vectors

    vectors = open_vectors(store, manifest)  # unreachable, missing or foreign: one line
    try:
        where = f"Chroma server {vectors.url}, collection '{manifest['collection']}'"
        count = vectors.count()
        _require_count(store, manifest, count, where, "re-index into a new store")
        _sample_finds_itself(vectors.collection, count, where)
    finally:
        vectors.close()


def _require_count(store: Path, manifest: dict, count: int, holder: str, repair: str) -> None:
    """The vectors `holder` holds must be as many as the manifest's chunks."""
    if count != manifest["chunks"]:
        raise StoreError(
            f"{store}: manifest says {manifest['chunks']} chunks but {holder} holds {count} vectors; "
            f"run `ragbatch index` on it again to finish an interrupted run, or {repair}"
        )


def _sample_finds_itself(chroma, count: int, where: Path | str) -> None:
    """Vectors from the start and the end of the collection must each be their own nearest
    neighbour: with HNSW files deleted, Chroma still counts every vector but finds few."""
    if not count:
        return
    ends = chroma.get(limit=SAMPLE // 2, include=[])["ids"] + chroma.get(offset=max(0, count - SAMPLE // 2), include=[])["ids"]
    ids = list(dict.fromkeys(ends))
    damaged = f"{where}: its vector index (HNSW files) is damaged or missing"
    try:
        got = chroma.get(ids=ids, include=["embeddings"])
        found = chroma.query(query_embeddings=got["embeddings"], n_results=1, include=["distances"])
    except Exception as e:  # noqa: BLE001 - chromadb raises InternalError for missing segments
        raise StoreError(f"{damaged} ({e}); {REINDEX}") from None
    lost = sum(1 for d in found["distances"] if not d or d[0] > 1e-3)
    if lost:
        raise StoreError(f"{damaged}: {lost} of {len(ids)} sample vectors are not found; {REINDEX}")


def _check_lexical(store: Path, manifest: dict) -> int:
    from ragbatch.lexical import LexicalIndex

    lexical = LexicalIndex.open(store)  # its errors name the damaged file and the repair
    if len(lexical) != manifest["chunks"]:
        repair = f"delete {store / 'bm25'} and run `ragbatch index` on the store again (BM25 is rebuilt from Chroma), or use --retrieval dense"
        raise StoreError(f"{store / 'bm25'}: holds {len(lexical)} chunks but the store {manifest['chunks']}; {repair}")
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
