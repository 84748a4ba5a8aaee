"""Private snapshots of a local store, for a reader that lives long (serve).

A reader holding a local store's read lock for its whole life would stop every index run
of that store (locks.py). `serve` reads a copy instead: taken under the read lock (the
index run waits only for the copy), then read without any lock. A new copy is taken when
an index run has finished: every run rewrites the manifest at its end, so the manifest's
stamp (mtime and size) says when, with one stat per check.

Snapshots live in CACHE/snapshots/<store name>-<digest of its path>/<pid>-<random>; a
snapshot whose process is gone is removed by the next one taken of that store.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

from ragbatch.locations import cache_dir
from ragbatch.store.locks import LOCK_FILE, READERS_LOCK_FILE, WRITER_FILE, Notify, reading
from ragbatch.store.manifest import MANIFEST

SNAPSHOTS = "snapshots"
# Files that belong to the store's place, not to its content.
NOT_COPIED = (LOCK_FILE, WRITER_FILE, READERS_LOCK_FILE, "*.tmp")


def stamp(store: Path) -> str:
    """Changes whenever an index run finishes with `store` (its manifest is rewritten)."""
    st = (store / MANIFEST).stat()
    return f"{st.st_mtime_ns}-{st.st_size}"


def take_snapshot(store: Path, notify: Notify | None = None, wait: float | None = None, cache: str | Path | None = None) -> tuple[Path, str]:
    """Copy `store` as of its last finished index run; return (the copy, its stamp).

    Waits for an index run writing it (at most `wait` seconds: then locks.StoreBusy)."""
    store = Path(store)
    folder = cache_dir(cache) / SNAPSHOTS / f"{store.name}-{hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    _remove_orphans(folder)
    copy = folder / f"{os.getpid()}-{secrets.token_hex(4)}"
    with reading(store, notify, wait):
        taken = stamp(store)
        try:
            shutil.copytree(store, copy, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
        except BaseException:
            remove_snapshot(copy)
            raise
    return copy, taken


def remove_snapshot(copy: Path) -> None:
    shutil.rmtree(copy, ignore_errors=True)


def _remove_orphans(folder: Path) -> None:
    """Snapshots of processes that are gone (a server killed, say)."""
    for copy in folder.iterdir():
        pid = copy.name.partition("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            remove_snapshot(copy)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
