"""The write loop of `index`: blocks from the executor -> the one Chroma writer and the
BM25 builder; then stale chunks deleted, BM25 and the manifest saved.

The order is what makes a crash safe at any point: new vectors first, then moved
chunks' places, then deletions, then BM25 (which can therefore only lag behind Chroma,
and a lagging index is rebuilt), then the manifest. A re-run completes the store.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Literal

from ragbatch.errors import RagbatchError
from ragbatch.ingest.executor import Executor, ReadFile, StreamBlock
from ragbatch.models.embedder import EmbedderLoader
from ragbatch.store.lexical_build import LexicalBuilder, stored_count
from ragbatch.store.manifest import FORMAT, Manifest, now, write_manifest
from ragbatch.store.records import Stored, indexed_text, place_of
from ragbatch.store.vectors import Vectors, open_vectors, server_address


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

    def __init__(self, vectors: Vectors):
        self.vectors = vectors
        self.queue: queue.Queue = queue.Queue(maxsize=self.QUEUED_BLOCKS)
        self.error: BaseException | None = None
        self.upserts = 0  # upsert calls made (merged blocks count once)
        self.thread = threading.Thread(target=self._run, name="chroma-writer", daemon=True)

    def _run(self) -> None:
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
                if nxt is None or len(chunks) + len(nxt[0]) > self.vectors.max_batch:
                    waiting.append(nxt)
                else:
                    chunks += nxt[0]
                    vectors.append(nxt[1])
            if self.error is None:
                try:
                    self.vectors.upsert(chunks, _stack(vectors))
                    self.upserts += 1
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    self.error = exc

    def put(self, chunks: list[dict], vectors) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((chunks, vectors))

    def __enter__(self) -> BackgroundWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> Literal[False]:
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


def stale_ids(existing: dict[str, Stored], current: set[str], read_ok: set[str], discovered: set[str], dir_roots: set[str]) -> list[str]:
    """Stored chunks to delete: old chunks of files read again, and chunks of files
    that vanished from an indexed directory. Files that failed to read keep theirs."""
    stale = []
    for chunk_id, (path, root, _) in existing.items():
        if chunk_id in current:
            continue
        if path in read_ok or (root in dir_roots and path not in discovered):
            stale.append(chunk_id)
    return stale


class WriteLoop:
    """One index run's writes into an open store (see write_store)."""

    def __init__(self, store: Path, manifest: Manifest, vectors: Vectors, report, progress, files: list[dict]):
        self.store, self.manifest, self.vectors, self.report, self.progress = store, manifest, vectors, report, progress
        self.existing = vectors.existing()
        self.lagging = stored_count(store) != len(self.existing)  # a crash, or a store older than BM25
        self.lexical = LexicalBuilder(store, keep_old=not self.lagging)
        self.current: set[str] = set()  # ids of every chunk of this run's input
        self.failed: set[str] = set()  # files that could not be read
        self.moved: list[dict] = []  # stored chunks an edit above them moved in their file
        self.new_paths: set[str] = set()  # files with chunks written in this run
        self.read_paths: set[str] = set()  # for progress only
        self.encode_seconds = 0.0
        self.read_task = progress.add_task("Reading", total=len(files))
        self.embed_task = progress.add_task("Embedding", total=None)

    def take(self, block: StreamBlock, writer: BackgroundWriter) -> None:
        before = len(self.read_paths)
        self._seen(block.seen)
        self._new(block, writer)
        self.encode_seconds += block.seconds
        self.progress.advance(self.read_task, len(self.read_paths) - before)

    def _seen(self, rows: list[dict]) -> None:
        for row in rows:
            if row.get("fatal"):
                raise RagbatchError(row["fatal"])
            self.read_paths.add(row["path"])
            if row["error"]:
                self.report.errors.append(row["error"])
                self.failed.add(row["path"])
            else:
                self.current.add(row["id"])
                if row["id"] in self.existing and self.existing[row["id"]].place != place_of(row):
                    self.moved.append(row)

    def _new(self, block: StreamBlock, writer: BackgroundWriter) -> None:
        chunks, vectors = block.new, block.vectors
        # The same source indexed twice in one run: write its chunks once.
        keep = []
        for i, chunk in enumerate(chunks):
            if chunk["id"] not in self.current:
                self.current.add(chunk["id"])
                keep.append(i)
        if len(keep) < len(chunks):
            chunks, vectors = [chunks[i] for i in keep], (None if vectors is None else vectors[keep])
        if not chunks:
            return
        if vectors is None:  # written by the executor itself (Ray actors into a server collection)
            self.report.writers.update(c["writer"] for c in chunks)
        else:
            writer.put(chunks, vectors)
            self.report.writers.add("driver")
        self.lexical.add((c["id"], indexed_text(c)) for c in chunks)  # to disk, part by part
        written = {c["path"] for c in chunks}
        self.new_paths |= written
        self.read_paths |= written
        self.report.embedded += len(chunks)
        self.progress.advance(self.embed_task, len(chunks))

    def finish(self, files: list[dict]) -> None:
        """After the writer: delete what is stale, save BM25 and the manifest."""
        report, vectors = self.report, self.vectors
        report.unchanged = len(self.current) - report.embedded
        read_ok = {f["path"] for f in files} - self.failed
        report.files = len(read_ok)
        dir_roots = {f["root"] for f in files if f["root"] != f["path"]}
        stale = stale_ids(self.existing, self.current, read_ok, {f["path"] for f in files}, dir_roots)
        if self.moved:
            vectors.update_places(self.moved)  # after the writer: one thread writes Chroma at a time
        if stale:
            vectors.delete(stale)
        report.deleted = len(stale)
        # BM25 is saved after Chroma, so after a crash it can only lag behind; a lagging
        # (or missing) index is rebuilt with Chroma's other chunks, page by page.
        doomed = set(stale)
        if self.lagging:
            kept = [cid for cid in self.existing if cid not in doomed]
            for start in range(0, len(kept), vectors.max_batch):
                self.lexical.add(vectors.indexed_texts(kept[start : start + vectors.max_batch]))
        if self.lagging or stale or report.embedded:
            self.lexical.finish(stale)
        else:
            self.lexical.discard()
        report.chunks = vectors.count()
        if report.embedded:
            report.ms_per_vector = 1000 * self.encode_seconds / report.embedded
        paths = {stored.path for cid, stored in self.existing.items() if cid not in doomed} | self.new_paths
        self.manifest.chunks, self.manifest.files, self.manifest.updated = report.chunks, len(paths), now()
        if report.embedded or self.moved:
            self.manifest.format = FORMAT  # records written now are packed: older ragbatch must not read them
        write_manifest(self.store, self.manifest)


def write_store(store: Path, manifest: Manifest, executor: Executor, loader: EmbedderLoader, files: list[dict], read: ReadFile, report, progress) -> None:
    """Stream files through the executor (read, chunk, embed what is new) into the one
    writer; then delete what is stale, save the BM25 index and the manifest.

    The driver keeps only ids (of stored and current chunks) and the blocks in flight,
    never every text of the input: the executors yield block by block.
    """
    vectors = open_vectors(store, manifest, create=True)
    try:
        loop = WriteLoop(store, manifest, vectors, report, progress, files)
        with BackgroundWriter(vectors) as writer:
            # A server collection is written by Ray's embed actors themselves, which yield
            # no vectors; everything else by the one writer here.
            for block in executor.stream(files, read, loop.existing.keys(), loader, server=server_address(manifest)):
                loop.take(block, writer)
        loop.finish(files)
    finally:
        vectors.close()
