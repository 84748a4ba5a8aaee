"""Runs the stage functions in this process: for small inputs, where Ray's start-up
(15-20 s on 2 cores) would cost more than the work itself.

Three threads, so the encoder never waits for the rest: one reads and chunks files, one
embeds, and the caller's (the writer loop: BM25 tokenising, Chroma hand-off) takes the
blocks. Both queues between them are bounded, so memory does not grow with the input;
an exception in either thread is raised in the caller as it was raised.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from queue import Queue
from typing import Any

from ragbatch.ingest.executor import ReadFile, StreamBlock
from ragbatch.models.embedder import EmbedderLoader
from ragbatch.progress import working
from ragbatch.store.records import indexed_text
from ragbatch.store.server import ServerAddress

# Texts per model.encode call: large enough that sentence-transformers' own
# length-sorted batching is as efficient as one call over everything, small enough
# for steady progress and for Chroma writes to overlap the next block.
ENCODE_BLOCK = 512
# New chunks gathered (and sorted by length) before they are embedded: bounds the texts
# held in memory whatever the input's size, while keeping padding low.
BUFFER_BLOCKS = 8
# Embedded blocks waiting for the writer loop.
BLOCKS_AHEAD = 2
_END = object()


class _Failed:
    """An exception raised in a worker thread, carried to the caller."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class RowQueue:
    """A FIFO holding at most `limit` rows in its items (an item larger than that is
    admitted alone), so a file of any size passes and many small ones do not pile up."""

    def __init__(self, limit: int):
        self.limit, self.rows = limit, 0
        self.items: list[tuple[Any, int]] = []
        self.ready = threading.Condition()
        self.closed = False

    def put(self, item, rows: int) -> bool:
        """False when the consumer went away (the item is dropped)."""
        with self.ready:
            self.ready.wait_for(lambda: self.closed or not self.items or self.rows + rows <= self.limit)
            if self.closed:
                return False
            self.items.append((item, rows))
            self.rows += rows
            self.ready.notify_all()
            return True

    def get(self):
        """The next item; _END once closed (the caller went away)."""
        with self.ready:
            self.ready.wait_for(lambda: self.closed or bool(self.items))
            if not self.items:
                return _END
            item, rows = self.items.pop(0)
            self.rows -= rows
            self.ready.notify_all()
            return item

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify_all()


def _import_readers(files: list[dict]) -> None:
    """Import what the readers import lazily, here, before the model's import starts on
    another thread: two threads importing one module can see it half-initialised
    (seen with numpy, benchmarks/RESULTS.md 2026-11-21)."""
    suffixes = {f["path"].rsplit(".", 1)[-1].lower() for f in files}
    if suffixes & {"html", "htm"}:
        import bs4  # noqa: F401
        import lxml.html  # noqa: F401
    if "md" in suffixes:
        import markdown_it  # noqa: F401
        import mdit_py_plugins.anchors  # noqa: F401
        import mdit_py_plugins.front_matter  # noqa: F401


def _thread(target, name: str) -> threading.Thread:
    # Daemon: Ctrl-C in the caller ends the run without waiting for an encode to finish.
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class LocalExecutor:
    name = "local"

    def __init__(self, progress):
        self.progress = progress
        self._loading_named = False  # the model's loading is shown once (_load)

    def stream(
        self,
        files: list[dict],
        read: ReadFile,
        stored: Collection[str],
        known: Collection[str],
        embedder: EmbedderLoader,
        server: ServerAddress | None = None,
    ) -> Iterator[StreamBlock]:
        """Read files in order; embed chunks not in `stored` whose text is not `known` (nor
        queued before), a few blocks at a time.

        `server` is not used: every vector goes back to this process's one writer.
        """
        _import_readers(files)
        rows = RowQueue(BUFFER_BLOCKS * ENCODE_BLOCK)  # the next buffer is read while one is embedded
        blocks: Queue = Queue(maxsize=BLOCKS_AHEAD)
        stop = threading.Event()

        def reading() -> None:
            try:
                for file in files:
                    file_rows = [] if stop.is_set() else read(file)
                    if stop.is_set() or not rows.put((file, file_rows), len(file_rows)):
                        return
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller
                rows.put(_Failed(exc), 0)
            rows.put(_END, 0)

        def embedding() -> None:
            try:
                for block in self._embedded(rows, stored, known, embedder, stop):
                    if stop.is_set():
                        return
                    blocks.put(block)
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller
                blocks.put(_Failed(exc))
            blocks.put(_END)

        threads = [_thread(reading, "ragbatch-read"), _thread(embedding, "ragbatch-embed")]
        try:
            while (block := blocks.get()) is not _END:
                if isinstance(block, _Failed):
                    raise block.exc
                yield block
            threads = []  # all done: nothing to stop
        finally:  # done, failed or interrupted (Ctrl-C): the workers stop at their next step
            stop.set()
            rows.close()
            if threads and hasattr(embedder, "cancel"):
                embedder.cancel()  # an encode call stops at its next batch
            for thread in threads:
                while thread.is_alive():  # a thread left inside torch aborts Python's exit
                    while not blocks.empty():  # unblock an embedder waiting to hand over
                        blocks.get_nowait()
                    thread.join(timeout=0.1)

    def _embedded(
        self, rows: RowQueue, stored: Collection[str], known: Collection[str], loader: EmbedderLoader, stop: threading.Event
    ) -> Iterator[StreamBlock]:
        """The stream's blocks, from the files `rows` brings. A new store (nothing stored)
        loads the model while the first files are read: everything read will be embedded."""
        pending: list[dict] = []
        queued: set[str] = set()  # text keys to embed
        if not stored:
            try:
                self._load(loader)
            except Exception:  # noqa: BLE001 - raised again where the model is needed, if it is
                pass
        while (item := rows.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            file, file_rows = item
            seen, found = [], 0
            for row in file_rows:
                if row["error"] or row["id"] in stored or row["key"] in known or row["key"] in queued:
                    seen.append(row)
                else:
                    queued.add(row["key"])
                    pending.append(row)
                    found += 1
            yield StreamBlock(seen, [], None, 0.0, read=(file["path"],), queued=found)
            if len(pending) >= BUFFER_BLOCKS * ENCODE_BLOCK:
                yield from self._embed(pending, loader)
                pending = []
        if not stop.is_set():
            yield from self._embed(pending, loader)

    def _load(self, loader: EmbedderLoader):
        if self._loading_named:  # the first call loads; the others get the loaded model
            return loader()
        self._loading_named = True
        with working(self.progress, f"Loading {loader.spec.name}"):
            return loader()

    def _embed(self, items: list[dict], loader: EmbedderLoader) -> Iterator[StreamBlock]:
        """Items are sorted by length first so each encode batch holds texts of similar
        length (less padding), as a single encode call over everything would."""
        if not items:
            return
        embedder = self._load(loader)
        ordered = sorted(items, key=lambda item: len(indexed_text(item)), reverse=True)
        for start in range(0, len(ordered), ENCODE_BLOCK):
            block = ordered[start : start + ENCODE_BLOCK]
            before = embedder.seconds
            vectors = embedder.embed_documents([indexed_text(item) for item in block])
            yield StreamBlock([], block, vectors, embedder.seconds - before)

    def close(self) -> None:
        pass
