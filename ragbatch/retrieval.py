"""Top-k retrieval for a batch of questions from a local or published store.

The query embedder is always the store's own (read from its manifest) with its query
instruction: vectors of another model would be silently meaningless.
"""

from __future__ import annotations

from pathlib import Path

from ragbatch.embedding import Embedder, EmbedderSpec, resolve_embedder
from ragbatch.errors import StoreError
from ragbatch.manifest import require_manifest


def store_embedder(store: Path, manifest: dict) -> EmbedderSpec:
    """The manifest's embedder, found on this machine (it may have been built elsewhere)."""
    recorded = manifest["embedder"]
    if Path(recorded["path"]).is_dir():
        return EmbedderSpec(**recorded)
    spec = resolve_embedder(recorded["name"])
    if recorded["revision"] not in ("local", spec.revision):
        raise StoreError(
            f"{store}: built with {recorded['name']} revision {recorded['revision']}, but this machine has revision {spec.revision}"
        )
    return EmbedderSpec(**{**recorded, "path": spec.path})


class Retriever:
    def __init__(self, store: str | Path, device: str = "auto", cache_dir: str | Path | None = None):
        from ragbatch.publish import resolve_store
        from ragbatch.store import ChromaStore

        self.requested = Path(store)
        self.path = resolve_store(store, cache_dir)  # a published store: a verified local copy
        self.manifest = require_manifest(self.path)
        self.spec = store_embedder(self.requested, self.manifest)
        self.embedder = Embedder(self.spec, device=device)
        self.chroma = ChromaStore(self.path, self.manifest["collection"], create=False)

    def search(self, questions: list[str], k: int):
        """One ranked list of Hits per question: all embedded at once, one batched query."""
        if not questions:
            return []
        vectors = self.embedder.embed_queries(questions)
        return self.chroma.query(vectors, min(k, max(1, self.chroma.count())))

    def close(self) -> None:
        self.chroma.close()
