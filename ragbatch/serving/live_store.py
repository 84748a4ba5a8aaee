"""The server's store: questions batched into one retrieval, and hot reload on publish.

One worker thread owns the Retriever (embedder, Chroma client, BM25 index): requests put
their question on a queue and await the result; the worker takes every question waiting,
embeds them in one batch and searches once per selection (mode, filters, k), as `ask` does
for a file. So Chroma and the embedder are never used from two threads.

Hot reload: before each batch the worker checks whether the store changed (one stat or
readlink). A published store (a link switched by `ragbatch publish`) changes when its
link does: the new version is opened (verified into the local cache, store/published.py).
A local store is served from a private snapshot (store/snapshot.py), so the server holds
no lock on it and a cron `index` of it runs; when a run has finished, a new snapshot is
taken and opened (while a run is still writing, the last finished state keeps serving).
Then the old one is closed. Retrieval happens before generation and hands over plain
data, so a request already generating finishes with the sources of the version it
retrieved from; nothing restarts.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragbatch.retrieval.retriever import Retriever
from ragbatch.retrieval.selection import MODES, Selection
from ragbatch.store.locks import StoreBusy
from ragbatch.store.published import is_published
from ragbatch.store.reader import open_store
from ragbatch.store.records import Hit
from ragbatch.store.snapshot import remove_snapshot, stamp, take_snapshot

# Most questions embedded in one batch (a burst beyond it takes several batches).
MAX_BATCH = 64


@dataclass
class Found:
    hits: list[Hit]  # ranked
    version: str  # the store version searched: the published version's name, or when a local store was last indexed
    embedder: str


class LiveRetriever:
    def __init__(self, store: str | Path, device: str = "auto", metrics=None, notify=None, warm_up: Callable[[Retriever], object] | None = None):
        """`warm_up` runs on the first retriever before the worker starts (serve's GPU sizing);
        what it returns is kept as `warmed`."""
        self.store = Path(store)
        self.device, self.metrics, self.notify = device, metrics, notify
        self.published = is_published(self.store)
        self._queue: queue.Queue = queue.Queue()
        self._target, self._retriever, self._snapshot = self._open()
        try:
            self.warmed = warm_up(self._retriever) if warm_up is not None else None
        except BaseException:
            self._close(self._retriever, self._snapshot)
            raise
        self._thread = threading.Thread(target=self._work, name="retrieval", daemon=True)
        self._thread.start()

    @property
    def embedder(self) -> str:
        return self._retriever.spec.name

    @property
    def version(self) -> str:
        if self.published:
            return Path(self._target).name
        return self._retriever.store.manifest.updated or str(self.store)

    def _current(self) -> str:
        """What the store is now: the published link's target, or the local manifest's stamp."""
        return os.path.realpath(self.store) if self.published else stamp(self.store)

    def _open(self, wait: float | None = None) -> tuple[str, Retriever, Path | None]:
        """(what was opened, its retriever, the snapshot to remove when done with it)."""
        # Every mode at once (embedder and BM25 both loaded): each request picks its own.
        if self.published:
            target = self._current()
            return target, Retriever.open(target, device=self.device, modes=MODES, notify=self.notify), None
        quiet = wait == 0  # a reload that finds an index run writing simply tries again later
        snapshot, taken = take_snapshot(self.store, (lambda line: None) if quiet else self.notify, wait)
        try:
            # Private: no read lock (a reload opens it in the worker thread, close may come from another).
            return taken, Retriever(open_store(snapshot, private=True), device=self.device, modes=MODES, notify=self.notify), snapshot
        except BaseException:
            remove_snapshot(snapshot)
            raise

    async def search(self, question: str, selection: Selection) -> Found:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((question, selection, future, loop))
        return await future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._serve(batch)

    def _serve(self, batch: list) -> None:
        try:
            self._reload_if_switched()
        except BaseException as exc:  # noqa: BLE001 - the requests get the error; the old version keeps serving
            for _, _, future, loop in batch:
                _deliver(loop, future, exc=exc)
            return
        groups: dict[Selection, list] = {}
        for entry in batch:
            groups.setdefault(entry[1], []).append(entry)
        if self.metrics is not None:
            self.metrics.retrieval_batch.observe(len(batch))
        for selection, entries in groups.items():
            try:
                ranked = self._retriever.search([question for question, *_ in entries], selection)
            except BaseException as exc:  # noqa: BLE001 - a bad filter fails its own requests only
                for _, _, future, loop in entries:
                    _deliver(loop, future, exc=exc)
                continue
            for (_, _, future, loop), hits in zip(entries, ranked):
                _deliver(loop, future, Found(hits, self.version, self.embedder))

    def _reload_if_switched(self) -> None:
        if self._current() == self._target:
            return
        try:
            opened = self._open(wait=None if self.published else 0)
        except StoreBusy:
            return  # an index run is writing it: the last finished state serves on
        old, old_snapshot = self._retriever, self._snapshot
        self._target, self._retriever, self._snapshot = opened
        self._close(old, old_snapshot)
        if self.metrics is not None:
            self.metrics.reloads.inc()
        if self.notify:
            self.notify(f"{self.store}: now serving version {self.version}")

    @staticmethod
    def _close(retriever: Retriever, snapshot: Path | None) -> None:
        try:
            retriever.close()
        finally:
            if snapshot is not None:
                remove_snapshot(snapshot)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._close(self._retriever, self._snapshot)


def _deliver(loop, future, result=None, exc=None) -> None:
    def settle():
        if future.done():  # the request was cancelled while it waited
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    loop.call_soon_threadsafe(settle)
