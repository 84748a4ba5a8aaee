"""One writer per store, and readers that never see it half-written.

    STORE/.ragbatch.lock          held by the one process writing the store (store_lock)
    STORE/.ragbatch.writer.json   who that is: pid, host, start time, progress (WriterStatus)
    STORE/.ragbatch.readers.db    readers' shared lock, a writer's exclusive one (SQLite)

Chroma silently loses vectors when two processes write one local collection, and cron
jobs overlap: a second writer is refused at once, not queued. Chroma also warns that
clients of several processes on one folder can lose data, and a reader opening a store
mid-run sees Chroma and BM25 out of step: so readers of a local store (`reading`) wait
while a writer holds it, and a writer waits for the readers already in. Neither waits in
silence: a waiting reader names the index run (pid, start, progress) at once, and may
give up after `wait` seconds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.errors import Note, StoreError

LOCK_FILE = ".ragbatch.lock"
WRITER_FILE = ".ragbatch.writer.json"
READERS_LOCK_FILE = ".ragbatch.readers.db"
# A writer rewrites its progress at most this often.
PROGRESS_EVERY_SECONDS = 1.0

Notify = Callable[[str], None]


class StoreBusy(StoreError):
    """A reader gave up waiting for the index run writing a local store."""


class Waiting(Note):
    """A line saying what a store waits for: said even where a caller hears nothing else
    (the Python API's default), because a wait must never be silent."""


def say_on_stderr(line: str) -> None:
    """Where a library caller gave no `notify`: a wait is never silent."""
    print(f"ragbatch: {line}", file=sys.stderr, flush=True)


@dataclass
class Writer:
    """The process holding a store's write lock, as it describes itself."""

    pid: int
    host: str
    started: float  # epoch seconds
    command: str
    progress: str = ""

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        where = f"pid {self.pid}" + ("" if self.host == socket.gethostname() else f" on {self.host}")
        progress = f", {self.progress}" if self.progress else ""
        return f"{self.command} ({where}, started {started}{progress})"


class WriterStatus:
    """The writer's side of WRITER_FILE: written when the lock is taken, rewritten with
    progress (at most once a second), removed when the lock is released."""

    def __init__(self, store: Path, command: str):
        self.path = store / WRITER_FILE
        self.writer = Writer(os.getpid(), socket.gethostname(), time.time(), command)
        self._written = 0.0
        self._save()

    def progress(self, text: str) -> None:
        self.writer.progress = text
        if time.monotonic() - self._written >= PROGRESS_EVERY_SECONDS:
            self._save()

    def _save(self) -> None:
        staged = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(asdict(self.writer)))
        os.replace(staged, self.path)  # a reader sees the old text or the new, never half
        self._written = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def current_writer(store: Path) -> Writer | None:
    """The writer of `store` as it last described itself, if one is recorded."""
    try:
        return Writer(**json.loads((Path(store) / WRITER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _who_writes(store: Path, unknown: str = "an index run") -> str:
    writer = current_writer(store)
    return writer.describe() if writer else unknown


@contextmanager
def store_lock(store: Path, notify: Notify | None = None, command: str = "an index run") -> Iterator[WriterStatus]:
    """Held by the one process writing `store` (index, publish); readers already in are
    waited for (`notify` hears of it at once). Yields the status readers see."""
    from filelock import FileLock, Timeout

    store.mkdir(parents=True, exist_ok=True)
    lock = FileLock(store / LOCK_FILE, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        who = _who_writes(store, "another ragbatch process")
        raise StoreError(f"{store}: {who} is writing this store; run again when it has finished") from None
    status = WriterStatus(store, command)
    try:
        with _readers_lock(store, "write", notify or say_on_stderr, None):
            yield status
    finally:
        status.remove()
        lock.release()


@contextmanager
def reading(store: Path, notify: Notify | None = None, wait: float | None = None) -> Iterator[None]:
    """Held by a reader of a local store (search, ask's retrieval, eval) while it has the
    store open: it waits for a writer to finish (at most `wait` seconds; None: as long as
    it takes), and a writer waits for it."""
    with _readers_lock(store, "read", notify or say_on_stderr, wait):
        yield


@contextmanager
def _readers_lock(store: Path, mode: str, notify: Notify, wait: float | None) -> Iterator[None]:
    from filelock import ReadWriteLock, Timeout

    lock = ReadWriteLock(store / READERS_LOCK_FILE, is_singleton=False)
    acquire = lock.acquire_read if mode == "read" else lock.acquire_write
    try:
        acquire(timeout=0)
    except Timeout:
        if mode == "read":
            until = f"; giving up after {wait:g} s" if wait is not None else ""
            notify(Waiting(f"{store}: waiting for {_who_writes(store)} to finish writing this store{until}"))
        else:
            notify(Waiting(f"{store}: waiting for the readers of this store (search, ask, eval, serve) to finish"))
        try:
            acquire(timeout=-1 if wait is None else wait)
        except Timeout:
            raise StoreBusy(
                f"{store}: still being written by {_who_writes(store)} after {wait:g} s ({{wait}} {wait:g}); run again when it has finished", refers=("wait",)
            ) from None
    try:
        yield
    finally:
        lock.release()
