"""The write loop of `index`: blocks from the executor -> the one Chroma writer and the
BM25 builder; then stale chunks deleted, copies, BM25 and the manifest saved.

One vector per distinct text (store/copies.py): a chunk whose text a stored chunk (or an
earlier one of this run) already has becomes a copy of that chunk, its representative,
and is not embedded; when a representative's file changes, a surviving copy takes over
its vector.

The order is what makes a crash safe at any point: new vectors first, then moved
chunks' places, then deletions, then the copies file (copies of a representative that is
gone are dropped when it is read, and re-derived), then BM25 (which can therefore only
lag behind Chroma, and a lagging index is rebuilt), then the manifest. A re-run
completes the store.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ragbatch.errors import RagbatchError
from ragbatch.ingest.executor import Executor, ReadFile, StreamBlock
from ragbatch.ingest.report import IndexReport
from ragbatch.models.embedder import EmbedderLoader
from ragbatch.store.copies import by_rep, read_copies, write_copies
from ragbatch.store.lexical_build import LexicalBuilder, stored_count
from ragbatch.store.locks import WriterStatus
from ragbatch.store.manifest import FORMAT, Manifest, now, write_manifest
from ragbatch.store.records import PLACE_FIELDS, indexed_text, place_of
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


def stale_ids(stored: Mapping[str, tuple], current: set[str], read_ok: set[str], discovered: set[str], dir_roots: set[str]) -> list[str]:
    """Stored chunks to delete: old chunks of files read again, and chunks of files
    that vanished from an indexed directory. Files that failed to read keep theirs.
    `stored` maps a chunk id to its (path, root, ...)."""
    stale = []
    for chunk_id, (path, root, *_) in stored.items():
        if chunk_id in current:
            continue
        if path in read_ok or (root in dir_roots and path not in discovered):
            stale.append(chunk_id)
    return stale


class WriteLoop:
    """One index run's writes into an open store (see write_store)."""

    def __init__(self, store: Path, manifest: Manifest, vectors: Vectors, report: IndexReport, progress, files: list[dict], status: WriterStatus | None = None):
        self.store, self.manifest, self.vectors, self.report, self.progress = store, manifest, vectors, report, progress
        self.status = status
        self.existing = vectors.existing()  # representatives: chunks with a vector
        self.lagging = stored_count(store) != len(self.existing)  # a crash, or a store older than BM25
        # Copies whose representative is gone, or that hold a vector themselves (a crash
        # between the two writes), are not copies: their chunks are taken up again.
        self.copies = {cid: row for cid, row in read_copies(store).items() if row["rep"] in self.existing and cid not in self.existing}
        self.rep_of: dict[str, str] = {}  # text key -> its representative
        twins = []  # stored vectors of a text stored twice (stores before format 3)
        for chunk_id in sorted(self.existing):
            key = self.existing[chunk_id].key
            if key in self.rep_of:
                twins.append(chunk_id)
            else:
                self.rep_of[key] = chunk_id
        self.folded = self._fold(twins)
        self.lexical = LexicalBuilder(store, keep_old=not self.lagging)
        self.current: set[str] = set()  # ids of every chunk of this run's input
        self.failed: set[str] = set()  # files that could not be read
        self.moved: list[dict] = []  # stored representatives an edit above them moved in their file
        self.copies_changed = bool(self.folded)
        self.new_copies = 0
        self.waiting: dict[str, list[dict]] = {}  # text key -> chunks of it seen before its representative
        self.late: list[str] = []  # vectors an executor wrote for a text already stored: deleted at the end
        self.new_paths: set[str] = set()  # files with chunks written in this run
        self.encode_seconds = 0.0
        # Progress: files read, and chunks embedded out of those found to embed (or, where
        # the executor cannot say before embedding them, an estimate from the bytes read).
        self.sizes = {f["path"]: os.path.getsize(f["path"]) if os.path.exists(f["path"]) else 0 for f in files}
        self.bytes_read = 0
        self.files_read = 0
        self.to_embed = 0
        self.read_task = progress.add_task("Reading", total=len(files))
        self.embed_task = progress.add_task("Embedding", total=None)

    def known_keys(self) -> set[str]:
        """Texts already stored: the executors embed none of them again."""
        return set(self.rep_of)

    def _fold(self, twins: list[str]) -> list[str]:
        """Stored vectors of a text another stored vector has become copies of it (their
        vectors are deleted at the end); returns their ids."""
        for chunk_id, _, fields in self.vectors.get(twins, text=False):
            stored = self.existing.pop(chunk_id)
            self.copies[chunk_id] = {**fields, "id": chunk_id, "key": stored.key, "rep": self.rep_of[stored.key]}
        return twins

    def take(self, block: StreamBlock, writer: BackgroundWriter) -> None:
        self._seen(block.seen)
        self._new(block, writer)
        self.encode_seconds += block.seconds
        self.progress.advance(self.read_task, len(block.read))
        self.files_read += len(block.read)
        self.bytes_read += sum(self.sizes.get(path, 0) for path in block.read)
        if block.queued is not None:
            self.to_embed += block.queued
        elif self.bytes_read:  # embedded so far, scaled by the bytes still to read
            self.to_embed = round(self.report.embedded * max(1.0, sum(self.sizes.values()) / self.bytes_read))
        self.progress.update(self.embed_task, total=max(self.to_embed, self.report.embedded))
        if self.status is not None:
            self.status.progress(
                f"{self.files_read} of {len(self.sizes)} files read, {self.report.embedded} of ~{max(self.to_embed, self.report.embedded)} chunks embedded"
            )

    def _seen(self, rows: list[dict]) -> None:
        for row in rows:
            if row.get("fatal"):
                raise RagbatchError(row["fatal"])
            chunk_id = row["id"]
            if row["error"]:
                self.report.errors.append(row["error"])
                reason = row.get("reason") or row["error"]
                self.report.skipped_detail.append({"file": row["error"].removesuffix(f": {reason}"), "reason": reason})
                self.failed.add(row["path"])
            elif chunk_id in self.current:
                continue  # the same source indexed twice in one run
            elif chunk_id in self.existing:
                self.current.add(chunk_id)
                if self.existing[chunk_id].place != place_of(row):
                    self.moved.append(row)
            elif chunk_id in self.copies:
                self.current.add(chunk_id)
                if place_of(self.copies[chunk_id]) != place_of(row):
                    self.copies[chunk_id].update({key: row.get(key, "") for key in PLACE_FIELDS})
                    self.copies_changed = True
            else:  # not embedded: its text is stored, or about to be
                self._copy(row)

    def _copy(self, row: dict) -> None:
        """`row` becomes a copy of its text's representative; if that is not known yet (it
        is still being embedded), once it is."""
        rep = self.rep_of.get(row["key"])
        if rep is None:
            self.waiting.setdefault(row["key"], []).append(row)
            return
        if row["id"] == rep or row["id"] in self.current:
            return  # the representative itself, given twice in one run
        self.current.add(row["id"])
        self.copies[row["id"]] = {**{key: value for key, value in row.items() if key not in ("text", "error", "reason", "fatal", "writer")}, "rep": rep}
        self.copies_changed = True
        self.new_copies += 1
        self.new_paths.add(row["path"])

    def _new(self, block: StreamBlock, writer: BackgroundWriter) -> None:
        chunks, vectors = block.new, block.vectors
        keep = []
        for i, chunk in enumerate(chunks):
            if chunk["id"] in self.current:
                continue  # the same source indexed twice in one run
            if chunk["key"] in self.rep_of:  # embedded elsewhere at the same time (Ray): one vector is kept
                if vectors is None:
                    self.late.append(chunk["id"])  # the executor wrote it: deleted at the end
                self._copy(chunk)
                continue
            self.current.add(chunk["id"])
            self.rep_of[chunk["key"]] = chunk["id"]
            keep.append(i)
            for row in self.waiting.pop(chunk["key"], []):
                self._copy(row)
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
        self.new_paths |= {c["path"] for c in chunks}
        self.report.embedded += len(chunks)
        self.progress.advance(self.embed_task, len(chunks))

    def _promote(self, stale: list[str]) -> list[dict]:
        """Representatives about to go whose text a surviving copy has: that copy takes
        over the vector. Returns the new representatives."""
        doomed = set(stale)
        survivors = {rep: [c for c in copies if c["id"] not in doomed] for rep, copies in by_rep(self.copies).items() if rep in doomed}
        heirs = {rep: copies[0] for rep, copies in survivors.items() if copies}
        if not heirs:
            return []
        vectors = self.vectors.embeddings(list(heirs))
        texts = {chunk_id: text for chunk_id, text, _ in self.vectors.get(list(heirs))}
        promoted = []
        for rep, heir in heirs.items():
            chunk = {**heir, "text": texts[rep]}
            del chunk["rep"]
            promoted.append(chunk)
            del self.copies[heir["id"]]
            for copy in survivors[rep][1:]:
                copy["rep"] = heir["id"]
            self.rep_of[heir["key"]] = heir["id"]
        import numpy as np

        self.vectors.upsert(promoted, np.asarray([vectors[rep] for rep in heirs], dtype=np.float32))
        self.lexical.add((c["id"], indexed_text(c)) for c in promoted)
        return promoted

    def finish(self, files: list[dict]) -> None:
        """After the writer: promote, delete what is stale, save copies, BM25 and the manifest."""
        if self.waiting:  # a representative never came: an executor failed to hand it over
            raise RagbatchError(f"{len(self.waiting)} texts were never embedded; run the same command again")
        report, vectors = self.report, self.vectors
        read_ok = {f["path"] for f in files} - self.failed
        report.files = len(read_ok)
        dir_roots = {f["root"] for f in files if f["root"] != f["path"]}
        discovered = {f["path"] for f in files}
        stale = stale_ids(self.existing, self.current, read_ok, discovered, dir_roots)
        stale_copies = stale_ids({cid: (row["path"], row["root"]) for cid, row in self.copies.items()}, self.current, read_ok, discovered, dir_roots)
        for chunk_id in stale_copies:
            del self.copies[chunk_id]
        promoted = self._promote(stale)
        if self.moved:
            vectors.update_places(self.moved)  # after the writer: one thread writes Chroma at a time
        gone = stale + self.folded + self.late
        if gone:
            vectors.delete(gone)
        report.deleted = len(stale) + len(stale_copies)
        if self.copies_changed or stale_copies or promoted or self.folded:
            write_copies(self.store, self.copies)
        # BM25 is saved after Chroma, so after a crash it can only lag behind; a lagging
        # (or missing) index is rebuilt with Chroma's other chunks, page by page.
        doomed = set(gone)
        if self.lagging:
            kept = [cid for cid in self.existing if cid not in doomed]
            for start in range(0, len(kept), vectors.max_batch):
                self.lexical.add(vectors.indexed_texts(kept[start : start + vectors.max_batch]))
        if self.lagging or gone or report.embedded or promoted:
            self.lexical.finish(gone)
        else:
            self.lexical.discard()
        report.copies = len(self.copies)
        report.chunks = vectors.count() + report.copies
        report.unchanged = len(self.current) - report.embedded - self.new_copies
        if report.embedded:
            report.ms_per_vector = 1000 * self.encode_seconds / report.embedded
        paths = {stored.path for cid, stored in self.existing.items() if cid not in doomed} | self.new_paths | {c["path"] for c in self.copies.values()}
        self.manifest.chunks, self.manifest.copies, self.manifest.files, self.manifest.updated = report.chunks, report.copies, len(paths), now()
        if report.embedded or self.moved or self.copies_changed or gone:
            self.manifest.format = FORMAT  # what was written now older ragbatch must not read
        write_manifest(self.store, self.manifest)


def write_store(
    store: Path,
    manifest: Manifest,
    executor: Executor,
    loader: EmbedderLoader,
    files: list[dict],
    read: ReadFile,
    report: IndexReport,
    progress,
    status: WriterStatus | None = None,
) -> None:
    """Stream files through the executor (read, chunk, embed what is new) into the one
    writer; then delete what is stale, save the copies, the BM25 index and the manifest.

    The driver keeps only ids (of stored and current chunks, and the text keys) and the
    blocks in flight, never every text of the input: the executors yield block by block.
    `status` tells waiting readers how far the run is.
    """
    vectors = open_vectors(store, manifest, create=True)
    try:
        loop = WriteLoop(store, manifest, vectors, report, progress, files, status)
        stored = loop.existing.keys() | loop.copies.keys()
        with BackgroundWriter(vectors) as writer:
            # A server collection is written by Ray's embed actors themselves, which yield
            # no vectors; everything else by the one writer here.
            for block in executor.stream(files, read, stored, loop.known_keys(), loader, server=server_address(manifest)):
                loop.take(block, writer)
        loop.finish(files)
    finally:
        vectors.close()
