"""Top-k retrieval for a batch of questions from a local or published store.

Modes: `dense` (Chroma, cosine), `bm25` (the lexical index beside it), `hybrid`
(both lists fused by reciprocal rank). The query embedder is always the store's own
(read from its manifest) with its query instruction: vectors of another model would
be silently meaningless.
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


MODES = ("dense", "bm25", "hybrid")
DEFAULT_MODE = "hybrid"
# Hybrid fuses this many candidates from each list (at least k): depth lets a chunk
# ranked low by one method but high by the other reach the top k.
FUSION_DEPTH = 50


class Retriever:
    def __init__(self, store: str | Path, device: str = "auto", cache_dir: str | Path | None = None, mode: str = DEFAULT_MODE):
        from ragbatch.store_cache import resolve_store
        from ragbatch.store import ChromaStore

        if mode not in MODES:
            raise StoreError(f"--retrieval {mode}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self.requested = Path(store)
        self.path = resolve_store(store, cache_dir)  # a published store: a verified local copy
        self.manifest = require_manifest(self.path)
        self.spec = store_embedder(self.requested, self.manifest)
        self.embedder = Embedder(self.spec, device=device) if mode != "bm25" else None
        self.lexical = self._open_lexical() if mode != "dense" else None
        self.chroma = ChromaStore(self.path, self.manifest["collection"], create=False)

    def _open_lexical(self):
        from ragbatch.lexical import LexicalIndex

        lexical = LexicalIndex.open(self.path)
        if len(lexical) != self.manifest["chunks"]:
            raise StoreError(
                f"{self.requested}: its BM25 index holds {len(lexical)} chunks but the store {self.manifest['chunks']}; "
                f"run `ragbatch index` on it once to rebuild, or use --retrieval dense"
            )
        return lexical

    def search(self, questions: list[str], k: int):
        """One ranked list of Hits per question: all embedded at once, one batched query."""
        if not questions:
            return []
        count = max(1, self.chroma.count())
        if self.mode == "dense":
            return self.chroma.query(self.embedder.embed_queries(questions), min(k, count))
        if self.mode == "bm25":
            return self.chroma.hits(self.lexical.search(questions, k))
        from ragbatch.fusion import reciprocal_rank_fusion

        depth = min(max(k, FUSION_DEPTH), count)
        dense = self.chroma.query(self.embedder.embed_queries(questions), depth)
        lexical = self.lexical.search(questions, depth)
        fused = [
            reciprocal_rank_fusion([[(h.chunk_id, h.score) for h in d], lex], k)
            for d, lex in zip(dense, lexical)
        ]
        return self.chroma.hits(fused)

    def close(self) -> None:
        """Close the store and free the embedder (and its GPU memory) for what runs next."""
        self.chroma.close()
        if self.embedder is not None:
            self.embedder.release()
            self.embedder = None
