"""The Chroma collection of a store: one writer, batched writes, cosine space.

Layout of a store directory:
    STORE/manifest.json   what built it (see manifest.py)
    STORE/chroma/         Chroma PersistentClient folder (or, when the manifest records a
                          `chroma_url`, a collection on that Chroma server: chroma_server.py)
    STORE/bm25/           lexical index (see lexical.py)
    STORE/.ragbatch.lock  held by the one process writing the store (see store_lock)
    STORE/.ragbatch.readers.db  readers' shared lock, a writer's exclusive one (SQLite)

Chroma loses vectors silently when two processes write one local collection, so every
write to a store's folder goes through the one `ChromaStore` the indexing process holds,
from the one `BackgroundWriter` thread, under `store_lock` (a Chroma server serialises
writes itself, and Ray's embed actors write one directly: ray_executor.py). Chroma also warns that clients of
several processes on one folder can lose data, and a reader opening a store mid-run
sees Chroma and BM25 out of step: so readers of a local store (`reading`) wait while a
writer holds it, and a writer waits for the readers already in.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

CHROMA_DIR = "chroma"
LOCK_FILE = ".ragbatch.lock"
READERS_LOCK_FILE = ".ragbatch.readers.db"
# Wait this long quietly before saying that a lock is being waited for.
QUIET_WAIT_SECONDS = 1.0
# Metadata kept with every vector; `path` and `root` let a re-index find chunks of
# files that changed or disappeared; `context` (page and section titles) is embedded and
# BM25-indexed with the text, which is what is stored and shown; `anchors` (space-separated)
# are the other link targets inside the chunk's section; `lines` (plain text: "L120-L134")
# is where in its file the chunk is. `position`, `start` and `lines` are its place, which
# an edit above it changes without changing its id (see `ChromaStore.refresh_places`).
METADATA_KEYS = ("source", "path", "root", "title", "section", "position", "start", "lines", "context", "anchors")
PLACE_KEYS = ("position", "start", "lines")
# Each chunk is stored as one metadata value, RECORD_KEY: a JSON object of its text and its
# METADATA_KEYS; Chroma's own `documents` are left empty. Chroma 1.5's SQLite segment
# writes a trigram full-text index of every document and a row with three index entries
# per metadata key, neither of which ragbatch reads (BM25 and --where filters are its
# own): one packed value wrote 50k vectors about twice as fast (benchmarks/RESULTS.md,
# 2026-11-22). Records of older stores (a document and one key per field) are read too.
RECORD_KEY = "ragbatch"
# HNSW search breadth (Chroma's default is 100). Hybrid retrieval asks for the top 50 of
# each list; at ef 100 the approximate top 50 missed 2.2 % of the exact one on raydocs-dev
# (one to three questions of its hit@5), at 200 0.5 %, at 400 0.1 % (every figure then equal to
# exact search; 3 ms a query on 2,000 vectors). Set when a collection
# is created; stores made earlier keep theirs.
HNSW_EF_SEARCH = 400
# Chroma reads all results of one query call with one SQL statement, and SQLite allows
# 32,766 variables in one: 5,000 questions at k=10 in one call fail. Stay well below.
MAX_RESULTS_PER_QUERY = 16_000


@dataclass
class Hit:
    chunk_id: str
    source: str
    score: float  # cosine similarity, 1 - Chroma's cosine distance
    text: str
    title: str
    anchors: tuple[str, ...] = ()  # other link targets inside its section (see readers.py)
    lines: str = ""  # "L120-L134" for plain text, else ""

    @property
    def cited(self) -> str:
        """The source as answers and search show it: `around.txt#L120-L134`, `page.html#anchor`."""
        return f"{self.source}#{self.lines}" if self.lines else self.source


def pack(chunk: dict) -> dict:
    """A chunk's Chroma metadata: its text and fields as one JSON value."""
    return {RECORD_KEY: json.dumps({"text": chunk["text"], **{k: chunk.get(k, "") for k in METADATA_KEYS}}, ensure_ascii=False, separators=(",", ":"))}


def unpack(document: str | None, metadata: dict | None) -> tuple[str, dict]:
    """(text, fields) of a stored chunk, packed (see RECORD_KEY) or as older stores wrote it."""
    metadata = metadata or {}
    packed = metadata.get(RECORD_KEY)
    if packed is None:
        return document or "", metadata
    record = json.loads(packed)
    return record.pop("text", ""), record


def _hit(chunk_id: str, text: str, meta: dict, score: float) -> Hit:
    """A Hit from a stored chunk's unpacked text and fields."""
    anchors = tuple((meta.get("anchors") or "").split())
    return Hit(chunk_id, meta.get("source", ""), float(score), text, meta.get("title", ""), anchors, meta.get("lines") or "")


class Stored(NamedTuple):
    """What a re-index needs to know of a stored chunk (held for every stored chunk)."""

    path: str  # interned: one string per file, not per chunk
    root: str
    place: int  # place_of() of its metadata


def place_of(chunk: dict) -> int:
    """A hash of the chunk's place in its file (PLACE_KEYS), to tell whether it moved."""
    return hash(tuple(chunk.get(key, "") for key in PLACE_KEYS))


class ChromaStore:
    def __init__(self, store: Path, collection: str, create: bool = True):
        import chromadb
        from chromadb.config import Settings

        from ragbatch.errors import StoreError

        self.path = Path(store) / CHROMA_DIR
        if not create and not (self.path / "chroma.sqlite3").exists():
            raise StoreError(f"{store}: no Chroma collection (was the index run interrupted before writing?)")
        self.client = chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False))
        if create:
            self.collection = self.client.get_or_create_collection(
                collection, configuration={"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH}}, embedding_function=None
            )
        else:
            try:
                self.collection = self.client.get_collection(collection, embedding_function=None)
            except Exception:  # noqa: BLE001 - chromadb raises NotFoundError or ValueError by version
                self.client.close()
                raise StoreError(f"{store}: the manifest names collection {collection!r}, which Chroma does not have") from None
        self.max_batch = self.client.get_max_batch_size()

    def count(self) -> int:
        return self.collection.count()

    def metadatas(self):
        """(id, metadata) of every stored chunk, read in pages."""
        offset = 0
        while True:
            page = self.collection.get(include=["metadatas"], limit=self.max_batch, offset=offset)
            yield from ((i, unpack(None, m)[1]) for i, m in zip(page["ids"], page["metadatas"]))
            if len(page["ids"]) < self.max_batch:
                return
            offset += len(page["ids"])

    def existing(self) -> dict[str, Stored]:
        """id -> (path, root, place) of every stored chunk."""
        return {chunk_id: Stored(sys.intern(meta.get("path", "")), sys.intern(meta.get("root", "")), place_of(meta)) for chunk_id, meta in self.metadatas()}

    def records(self, ids, text: bool = True):
        """(id, text, fields) of the given stored chunks, read in pages; text "" when
        `text` is false (metadata only)."""
        ids = list(ids)
        include = ["documents", "metadatas"] if text else ["metadatas"]
        for start in range(0, len(ids), self.max_batch):
            page = self.collection.get(ids=ids[start : start + self.max_batch], include=include)
            documents = page["documents"] if text else [None] * len(page["ids"])
            for chunk_id, document, metadata in zip(page["ids"], documents, page["metadatas"]):
                yield (chunk_id, *unpack(document, metadata))

    def refresh_places(self, chunks: list[dict]) -> None:
        """Rewrite the place (PLACE_KEYS) of chunks already stored that an edit above them
        moved in their file; their text, and so their vector, is unchanged. The stored record
        is read back for its text (Ray hands back stored chunks without theirs)."""
        for start in range(0, len(chunks), self.max_batch):
            part = {c["id"]: c for c in chunks[start : start + self.max_batch]}
            ids, records = [], []
            for chunk_id, text, fields in self.records(part):
                ids.append(chunk_id)
                records.append(pack({**fields, "text": text, **{k: part[chunk_id].get(k, "") for k in PLACE_KEYS}}))
            if ids:
                self.collection.update(ids=ids, metadatas=records)

    def address(self) -> dict | None:
        """What another process needs to write this collection beside this one: None for
        a local folder, which only its one writer may write (ServerStore has one)."""
        return None

    def upsert(self, chunks: list[dict], embeddings) -> None:
        for start in range(0, len(chunks), self.max_batch):
            part = chunks[start : start + self.max_batch]
            self.collection.upsert(ids=[c["id"] for c in part], embeddings=embeddings[start : start + self.max_batch], metadatas=[pack(c) for c in part])

    def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), self.max_batch):
            self.collection.delete(ids=ids[start : start + self.max_batch])

    def texts(self, ids: list[str]) -> list[tuple[str, str]]:
        """(id, text) pairs for the given ids, in pages."""
        return [(chunk_id, text) for chunk_id, text, _ in self.records(ids)]

    def sources(self, ids) -> dict[str, str]:
        """id -> source for the given ids, in pages (metadata only)."""
        return {chunk_id: fields.get("source", "") for chunk_id, _, fields in self.records(ids, text=False)}

    def indexed_texts(self, ids: list[str]) -> list[tuple[str, str]]:
        """(id, the text BM25 and the embedder read: context line and text) for the given ids."""
        from ragbatch.chunking import indexed_text

        return [(chunk_id, indexed_text({"text": text, "context": fields.get("context")})) for chunk_id, text, fields in self.records(ids)]

    def hits(self, rankings: list[list[tuple[str, float]]]) -> list[list[Hit]]:
        """Hits for (id, score) lists ranked elsewhere (BM25, fusion), in their order.

        Every id of every list is fetched in one paged lookup, not one call per question.
        """
        wanted = dict.fromkeys(chunk_id for ranked in rankings for chunk_id, _ in ranked)
        found = {chunk_id: (text, fields) for chunk_id, text, fields in self.records(wanted)}
        return [[_hit(i, *found[i], score) for i, score in ranked if i in found] for ranked in rankings]

    def ranked(self, embeddings, k: int, ids: set[str] | None = None) -> list[list[tuple[str, float]]]:
        """Top k (chunk id, cosine similarity) per query vector; only among `ids` when given."""
        results: list[list[tuple[str, float]]] = []
        step = max(1, min(self.max_batch, MAX_RESULTS_PER_QUERY // k))
        restrict = {"ids": sorted(ids)} if ids is not None else {}
        for start in range(0, len(embeddings), step):
            found = self.collection.query(query_embeddings=embeddings[start : start + step], n_results=k, include=["distances"], **restrict)
            for found_ids, dists in zip(found["ids"], found["distances"]):
                results.append([(i, 1.0 - float(d)) for i, d in zip(found_ids, dists)])
        return results

    def query(self, embeddings, k: int) -> list[list[Hit]]:
        """Top k for every query vector, in one call per Chroma batch."""
        results: list[list[Hit]] = []
        step = max(1, min(self.max_batch, MAX_RESULTS_PER_QUERY // k))
        for start in range(0, len(embeddings), step):
            found = self.collection.query(
                query_embeddings=embeddings[start : start + step],
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )
            for ids, docs, metas, dists in zip(found["ids"], found["documents"], found["metadatas"], found["distances"]):
                results.append([_hit(i, *unpack(doc, m), 1.0 - float(d)) for i, doc, m, d in zip(ids, docs, metas, dists)])
        return results

    def close(self) -> None:
        """Release the SQLite files: required before the store is copied or published.

        close() drops Chroma's shared per-path system once its last client closes;
        clearing that cache by hand would break other clients open in this process.
        """
        self.client.close()


def open_vectors(store: Path, manifest: dict, create: bool = False) -> ChromaStore:
    """The store's vector collection: its local Chroma folder, or the Chroma server its
    manifest names (the same interface; see chroma_server.py)."""
    if manifest.get("chroma_url"):
        from ragbatch.chroma_server import ServerStore, owner

        return ServerStore(manifest["chroma_url"], manifest["collection"], create=create, expected_owner=owner(manifest))
    return ChromaStore(store, manifest["collection"], create=create)


@contextmanager
def store_lock(store: Path, notify=None):
    """One writer per store: Chroma silently loses vectors when two processes write one
    collection, and cron jobs overlap. A second writer is refused at once, not queued;
    readers already in are waited for (`notify` hears of it after a second)."""
    from filelock import FileLock, Timeout

    from ragbatch.errors import StoreError

    store.mkdir(parents=True, exist_ok=True)
    lock = FileLock(store / LOCK_FILE, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(f"{store}: another ragbatch process is indexing this store; run again when it has finished") from None
    try:
        with _readers_lock(store, "write", notify):
            yield
    finally:
        lock.release()


@contextmanager
def reading(store: Path, notify=None):
    """Held by a reader of a local store (search, ask's retrieval, eval) while it has the
    store open: it waits for a writer to finish, and a writer waits for it."""
    with _readers_lock(store, "read", notify):
        yield


@contextmanager
def _readers_lock(store: Path, mode: str, notify):
    from filelock import ReadWriteLock, Timeout

    lock = ReadWriteLock(store / READERS_LOCK_FILE, is_singleton=False)
    acquire = lock.acquire_read if mode == "read" else lock.acquire_write
    try:
        acquire(timeout=QUIET_WAIT_SECONDS)
    except Timeout:
        if notify:
            notify(f"{store}: waiting for the {'index run writing' if mode == 'read' else 'readers of'} this store to finish")
        acquire()
    try:
        yield
    finally:
        lock.release()


class BackgroundWriter:
    """The single Chroma writer, on its own thread so writes overlap the next encode.

    Blocks waiting in the queue when the writer comes back for more are merged into one
    upsert of up to Chroma's maximum batch: each upsert is a SQLite transaction and an
    HNSW update, so a writer that falls behind (a GPU encodes faster than one Chroma
    writes) catches up with fewer, larger writes instead of falling further behind.
    The queue is short: if Chroma still falls behind, the embedder waits instead of
    holding every vector in memory.
    """

    QUEUED_BLOCKS = 16

    def __init__(self, chroma):
        self.chroma = chroma
        self.queue: queue.Queue = queue.Queue(maxsize=self.QUEUED_BLOCKS)
        self.error: BaseException | None = None
        self.upserts = 0  # upsert calls made (merged blocks count once)
        self.thread = threading.Thread(target=self._run, name="chroma-writer", daemon=True)

    def _run(self):
        waiting: list = []  # taken from the queue, not yet written; None ends the run
        while True:
            item = waiting.pop(0) if waiting else self.queue.get()
            if item is None:
                return
            chunks, vectors = list(item[0]), [item[1]]
            while not waiting:  # merge what is already queued, up to one maximum batch
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or len(chunks) + len(nxt[0]) > self.chroma.max_batch:
                    waiting.append(nxt)
                else:
                    chunks += nxt[0]
                    vectors.append(nxt[1])
            if self.error is None:
                try:
                    self.chroma.upsert(chunks, _stack(vectors))
                    self.upserts += 1
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    self.error = exc

    def put(self, chunks, vectors):
        if self.error is not None:
            raise self.error
        self.queue.put((chunks, vectors))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
        return False


def _stack(blocks: list):
    if len(blocks) == 1:
        return blocks[0]
    import numpy as np

    return np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks])
