"""One writer per store, and readers that never see it half-written.

    STORE/.ragbatch.lock          held by the one process writing the store (store_lock)
    STORE/.ragbatch.readers.db    readers' shared lock, a writer's exclusive one (SQLite)

Chroma silently loses vectors when two processes write one local collection, and cron
jobs overlap: a second writer is refused at once, not queued. Chroma also warns that
clients of several processes on one folder can lose data, and a reader opening a store
mid-run sees Chroma and BM25 out of step: so readers of a local store (`reading`) wait
while a writer holds it, and a writer waits for the readers already in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragbatch.errors import StoreError

LOCK_FILE = ".ragbatch.lock"
READERS_LOCK_FILE = ".ragbatch.readers.db"
# Wait this long quietly before saying that a lock is being waited for.
QUIET_WAIT_SECONDS = 1.0

Notify = Callable[[str], None]


@contextmanager
def store_lock(store: Path, notify: Notify | None = None) -> Iterator[None]:
    """Held by the one process writing `store` (index, publish); readers already in are
    waited for (`notify` hears of it after a second)."""
    from filelock import FileLock, Timeout

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
def reading(store: Path, notify: Notify | None = None) -> Iterator[None]:
    """Held by a reader of a local store (search, ask's retrieval, eval) while it has the
    store open: it waits for a writer to finish, and a writer waits for it."""
    with _readers_lock(store, "read", notify):
        yield


@contextmanager
def _readers_lock(store: Path, mode: str, notify: Notify | None) -> Iterator[None]:
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
