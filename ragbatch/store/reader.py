"""Opening a store to read it: one call.

`open_store(path)` resolves a published link to a verified local copy of its version
(published.py), takes the read lock of a local store (locks.py), reads the manifest and
opens the vectors; the BM25 index is opened when first asked for. Search, ask, eval,
serve and the Python API all read a store through it.
"""

from __future__ import annotations

import contextlib
from functools import cached_property
from pathlib import Path

from ragbatch.errors import StoreError
from ragbatch.models.embedder import EmbedderSpec, resolve_embedder
from ragbatch.store.copies import by_rep, read_copies
from ragbatch.store.lexical import LexicalIndex
from ragbatch.store.locks import Notify, reading
from ragbatch.store.manifest import Manifest, require_manifest
from ragbatch.store.published import resolve_store
from ragbatch.store.vectors import Vectors, open_vectors


class StoreReader:
    """A store open for reading: `manifest`, `vectors` and, on demand, `lexical` and `copies`.

    `requested` is the path as given (a published link, say), `path` the folder read (the
    verified copy of a published version, or the store itself). Close it, or use it as a
    context manager: a local store's writers wait for its readers."""

    def __init__(self, requested: Path, path: Path, manifest: Manifest, vectors: Vectors, lock: contextlib.ExitStack):
        self.requested, self.path, self.manifest, self.vectors = requested, path, manifest, vectors
        self._lock = lock

    @property
    def published(self) -> bool:
        return self.path != self.requested

    @cached_property
    def copies(self) -> dict[str, list[dict]]:
        """Representative id -> the chunks that share its text and vector (copies.py)."""
        return by_rep(read_copies(self.path))

    @cached_property
    def lexical(self) -> LexicalIndex:
        """The BM25 index, which must hold as many chunks as the manifest says."""
        lexical = LexicalIndex.open(self.path)
        if len(lexical) != self.manifest.vectors:
            raise StoreError(
                f"{self.requested}: its BM25 index holds {len(lexical)} chunks but the store {self.manifest.vectors}; "
                "run `ragbatch index` on it once to rebuild, or use {retrieval} dense",
                refers=("retrieval",),
            )
        return lexical

    def embedder_spec(self) -> EmbedderSpec:
        """The manifest's embedder, found on this machine (the store may have been built elsewhere)."""
        recorded = self.manifest.embedder
        if Path(recorded.path).is_dir():
            return recorded
        spec = resolve_embedder(recorded.name)
        if recorded.revision not in ("local", spec.revision):
            raise StoreError(f"{self.requested}: built with {recorded.name} revision {recorded.revision}, but this machine has revision {spec.revision}")
        return EmbedderSpec(recorded.name, spec.path, recorded.revision, recorded.document_instruction, recorded.query_instruction)

    def close(self) -> None:
        try:
            self.vectors.close()
        finally:
            self._lock.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(
    store: str | Path, notify: Notify | None = None, cache_dir: str | Path | None = None, wait: float | None = None, private: bool = False
) -> StoreReader:
    """Open `store` (a local store folder, or a published link or version) for reading.

    A local store is read only between index runs: never half-written, never opened by
    two processes' Chroma clients while one writes (`notify` hears of a wait at once; after
    `wait` seconds, if given, it fails). A `private` copy that no process writes (serve's
    snapshot) takes no lock: it may then be closed from another thread. A Chroma
    server that is down fails here, before any model loads."""
    requested = Path(store)
    path = resolve_store(requested, cache_dir)
    lock = contextlib.ExitStack()
    if path == requested and not private:
        lock.enter_context(reading(path, notify, wait))
    try:
        manifest = require_manifest(path)
        vectors = open_vectors(path, manifest, create=False)
    except BaseException:
        lock.close()
        raise
    return StoreReader(requested, path, manifest, vectors, lock)
