"""Top-k retrieval for a batch of questions from a local or published store.

Modes: `dense` (Chroma, cosine), `bm25` (the lexical index beside it), `hybrid`
(both lists fused by reciprocal rank). The query embedder is always the store's own
(read from its manifest) with its query instruction: vectors of another model would
be silently meaningless.
"""

from __future__ import annotations

import contextlib
import copy
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
        raise StoreError(f"{store}: built with {recorded['name']} revision {recorded['revision']}, but this machine has revision {spec.revision}")
    return EmbedderSpec(**{**recorded, "path": spec.path})


MODES = ("dense", "bm25", "hybrid")
DEFAULT_MODE = "hybrid"
# Hybrid fuses this many candidates from each list (at least k): depth lets a chunk
# ranked low by one method but high by the other reach the top k.
FUSION_DEPTH = 50
# Reciprocal rank fusion's constant: an id at rank r earns 1/(c + r) from each list. With
# c = 60 (the paper's value, for fusing dozens of 1000-deep runs) a chunk that both lists
# rank 50th outscores the top hit of either list alone; with c = 10 a list's top hit still
# beats chunks that both rank below 12th. Measured on the three evaluation sets
# (benchmarks/RESULTS.md): squad-dev answer hit@5 0.956 -> 0.968, raydocs sets within a question.
FUSION_C = 10
# Diversity: at most this many chunks of one section (a source with an #anchor) in the top
# k; a further chunk of a section already shown yields its place to another section. Files
# without sections (plain text) are not limited. 0: no limit.
MAX_PER_SECTION = 1


def parse_modes(value: str) -> tuple[str, ...]:
    """ "dense,bm25,hybrid" -> the modes in that order, each once; unknown names refused."""
    modes = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise StoreError(f"--retrieval {value}: expected one or more of {', '.join(MODES)}, separated by commas")
    return modes


class Retriever:
    """Top-k chunks for a batch of questions, in one or several modes.

    `modes` (default: just `mode`) are all served from one pass: the questions are
    embedded once and each retriever queried once, at the depth the deepest mode needs.
    `chunk_filter` (see filters.py) restricts every mode to the chunks it admits.
    """

    def __init__(
        self,
        store: str | Path,
        device: str = "auto",
        cache_dir: str | Path | None = None,
        mode: str = DEFAULT_MODE,
        chunk_filter=None,
        modes: tuple[str, ...] | None = None,
        max_per_section: int = MAX_PER_SECTION,
        max_per_page: int = 0,
        notify=None,
    ):
        from ragbatch.store import open_vectors, reading
        from ragbatch.store_cache import resolve_store

        modes = tuple(modes or (mode,))
        for m in modes:
            if m not in MODES:
                raise StoreError(f"--retrieval {m}: expected one of {', '.join(MODES)}")
        self.mode, self.modes = modes[0], modes
        self.chunk_filter = chunk_filter
        self.max_per_section, self.max_per_page = max_per_section, max_per_page
        self.requested = Path(store)
        self.path = resolve_store(store, cache_dir)  # a published store: a verified local copy
        # A local store is read only between index runs: never half-written, never opened
        # by two processes' Chroma clients while one writes (store.reading).
        self._reading = contextlib.ExitStack()
        if self.path == self.requested:
            self._reading.enter_context(reading(self.path, notify))
        try:
            self.manifest = require_manifest(self.path)
            self.spec = store_embedder(self.requested, self.manifest)
            # The vectors first: a Chroma server that is down fails before a model loads.
            self.chroma = open_vectors(self.path, self.manifest, create=False)
        except BaseException:
            self._reading.close()
            raise
        try:
            self.embedder = Embedder(self.spec, device=device) if set(modes) != {"bm25"} else None
            self.lexical = self._open_lexical() if modes != ("dense",) else None
        except BaseException:
            self.chroma.close()
            self._reading.close()
            raise

    def selecting(self, mode: str, chunk_filter=None, max_per_section: int = MAX_PER_SECTION, max_per_page: int = 0) -> Retriever:
        """This retriever (same embedder, Chroma and BM25 index: opened with every mode it
        needs) searching in one `mode` with other filters and diversity: `serve` takes them
        per request. Close the original, not the view."""
        if mode not in self.modes:
            raise StoreError(f"--retrieval {mode}: this retriever was opened for {', '.join(self.modes)}")
        view = copy.copy(self)
        view.mode, view.modes = mode, (mode,)
        view.chunk_filter, view.max_per_section, view.max_per_page = chunk_filter, max_per_section, max_per_page
        return view

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
        """One ranked list of Hits per question in the first mode: all embedded at once, one batched query."""
        return self.search_modes(questions, k)[self.mode]

    def search_modes(self, questions: list[str], k: int) -> dict[str, list]:
        """{mode: one ranked list of Hits per question} for every mode of this retriever."""
        if not questions:
            return {m: [] for m in self.modes}
        allowed = self._allowed_ids()
        if allowed is not None and not allowed:
            return {m: [[] for _ in questions] for m in self.modes}
        count = max(1, self.chroma.count() if allowed is None else len(allowed))
        diverse = self.max_per_section > 0 or self.max_per_page > 0
        depth = min(max(k, FUSION_DEPTH), count) if "hybrid" in self.modes or diverse else min(k, count)
        dense = lexical = None
        if "dense" in self.modes or "hybrid" in self.modes:
            dense = self.chroma.ranked(self.embedder.embed_queries(questions), depth, ids=allowed)
        if "bm25" in self.modes or "hybrid" in self.modes:
            lexical = self.lexical.search(questions, depth, allowed=allowed)
        rankings = {}
        for mode in self.modes:
            if mode == "dense":
                rankings[mode] = dense
            elif mode == "bm25":
                rankings[mode] = lexical
            else:
                rankings[mode] = [fuse(d, lex, depth) for d, lex in zip(dense, lexical)]
        rankings = self._diversify(rankings, k)
        hits = self.chroma.hits([r for mode in self.modes for r in rankings[mode]])
        n = len(questions)
        return {mode: hits[i * n : (i + 1) * n] for i, mode in enumerate(self.modes)}

    def _diversify(self, rankings: dict, k: int) -> dict:
        """Each ranking cut to k, with at most `max_per_section` chunks of one section and
        `max_per_page` of one page (0: no limit) among them."""
        if not (self.max_per_section > 0 or self.max_per_page > 0):
            return {mode: [r[:k] for r in lists] for mode, lists in rankings.items()}
        from ragbatch.evaluation import page_of
        from ragbatch.fusion import diversify

        source = self.chroma.sources({i for lists in rankings.values() for r in lists for i, _ in r})
        section = lambda item: source.get(item[0]) if "#" in source.get(item[0], "") else None  # noqa: E731
        page = lambda item: page_of(source.get(item[0], ""))  # noqa: E731
        out = {}
        for mode, lists in rankings.items():
            out[mode] = []
            for r in lists:
                r = diversify(r, section, self.max_per_section, len(r))
                out[mode].append(diversify(r, page, self.max_per_page, k))
        return out

    def _allowed_ids(self) -> set[str] | None:
        if not self.chunk_filter:
            return None
        from ragbatch.filters import allowed_ids
        from ragbatch.store import METADATA_KEYS

        return allowed_ids(self.chroma, self.chunk_filter, METADATA_KEYS)

    def close(self) -> None:
        """Close the store and free the embedder (and its GPU memory) for what runs next."""
        self.chroma.close()
        self._reading.close()
        if self.embedder is not None:
            self.embedder.release()
            self.embedder = None


def fuse(dense: list[tuple[str, float]], lexical: list[tuple[str, float]], k: int) -> list[tuple[str, float]]:
    """Hybrid: the two ranked lists fused by reciprocal rank."""
    from ragbatch.fusion import reciprocal_rank_fusion

    return reciprocal_rank_fusion([dense, lexical], k, c=FUSION_C)
