"""Top-k retrieval for a batch of questions from an open store.

Modes: `dense` (Chroma, cosine), `bm25` (the lexical index beside it), `hybrid` (both
lists fused by reciprocal rank). The query embedder is always the store's own (read
from its manifest) with its query instruction: vectors of another model would be
silently meaningless.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ragbatch.errors import Note, ParameterError
from ragbatch.models.embedder import Embedder, EmbedderSpec
from ragbatch.models.reranker import Reranker
from ragbatch.retrieval.filters import allowed_ids
from ragbatch.retrieval.fusion import diversify, reciprocal_rank_fusion
from ragbatch.retrieval.selection import MODES, Selection
from ragbatch.retrieval.sources import page_of
from ragbatch.store.collection import Ranking
from ragbatch.store.locks import Notify
from ragbatch.store.reader import StoreReader, open_store
from ragbatch.store.records import Hit

# Hybrid fuses this many candidates from each list (at least k): depth lets a chunk
# ranked low by one method but high by the other reach the top k.
FUSION_DEPTH = 50
# Reciprocal rank fusion's constant: an id at rank r earns 1/(c + r) from each list. With
# c = 60 (the paper's value, for fusing dozens of 1000-deep runs) a chunk that both lists
# rank 50th outscores the top hit of either list alone; with c = 10 a list's top hit still
# beats chunks that both rank below 12th. Measured on the three evaluation sets
# (benchmarks/RESULTS.md): squad-dev answer hit@5 0.956 -> 0.968, raydocs sets within a question.
FUSION_C = 10


class Retriever:
    """Top-k chunks for a batch of questions, in any of the `modes` it was opened for.

    It owns `store` (closing the retriever closes it). The embedder is loaded only if a
    mode needs it (dense, hybrid), the BM25 index only if one needs that (bm25, hybrid).
    """

    def __init__(self, store: StoreReader, device: str = "auto", modes: tuple[str, ...] = MODES, notify: Notify | None = None):
        for mode in modes:
            Selection(mode=mode)  # an unknown mode: one ParameterError line
        self.store, self.modes, self.notify = store, tuple(modes), notify
        self.device = device
        self.reranker: Reranker | None = None  # loaded at the first search that reranks
        try:
            self.spec: EmbedderSpec = store.embedder_spec()
            self.embedder: Embedder | None = Embedder(self.spec, device=device) if set(self.modes) != {"bm25"} else None
            if self.modes != ("dense",):
                store.lexical  # noqa: B018 - opened (and checked) now, not at the first question
        except BaseException:
            store.close()
            raise

    @classmethod
    def open(
        cls, store: str | Path, device: str = "auto", modes: tuple[str, ...] = MODES, notify: Notify | None = None, wait: float | None = None
    ) -> Retriever:
        """A retriever over the store at `store` (a folder, or a published link); `notify`
        hears of a wait for an index run (given up after `wait` seconds, if given) and of
        a filter that matches no chunk."""
        return cls(open_store(store, notify=notify, wait=wait), device=device, modes=modes, notify=notify)

    def search(self, questions: list[str], selection: Selection) -> list[list[Hit]]:
        """One ranked list of Hits per question: all embedded at once, one batched query."""
        return self.search_modes(questions, selection, (selection.mode,))[selection.mode]

    def search_modes(self, questions: list[str], selection: Selection, modes: tuple[str, ...]) -> dict[str, list[list[Hit]]]:
        """{mode: one ranked list of Hits per question} for several modes from one pass:
        the questions are embedded once and each index queried once, at the depth the
        deepest mode needs. `selection.mode` is ignored; its k, filter and limits apply."""
        if selection.rerank:
            return self._reranked(questions, selection, modes)
        unopened = [m for m in modes if m not in self.modes]
        if unopened:
            raise ParameterError("retrieval", unopened[0], f"this retriever was opened for {', '.join(self.modes)}")
        if not questions:
            return {m: [] for m in modes}
        vectors, k = self.store.vectors, selection.k
        allowed, cite_as = allowed_ids(vectors, selection.chunk_filter, self.store.copies) if selection.chunk_filter else (None, {})
        if allowed is not None and not allowed:
            if self.notify:
                self.notify(Note(f"{self.store.requested}: no stored chunk matches {selection.chunk_filter.describe()}; nothing is retrieved"))
            return {m: [[] for _ in questions] for m in modes}
        count = max(1, vectors.count() if allowed is None else len(allowed))
        depth = min(max(k, FUSION_DEPTH), count) if "hybrid" in modes or selection.diverse else min(k, count)
        dense: list[Ranking] = []
        lexical: list[Ranking] = []
        if "dense" in modes or "hybrid" in modes:
            assert self.embedder is not None
            dense = vectors.query(self.embedder.embed_queries(questions), depth, ids=allowed)
        if "bm25" in modes or "hybrid" in modes:
            lexical = self.store.lexical.search(questions, depth, allowed=allowed)
        rankings: dict[str, list[Ranking]] = {}
        for mode in modes:
            if mode == "dense":
                rankings[mode] = dense
            elif mode == "bm25":
                rankings[mode] = lexical
            else:
                rankings[mode] = [fuse(d, lex, depth) for d, lex in zip(dense, lexical)]
        rankings = self._diversify(rankings, selection, cite_as)
        hits = [[self._cited(hit, cite_as) for hit in ranked] for ranked in vectors.hits([r for mode in modes for r in rankings[mode]])]
        n = len(questions)
        return {mode: hits[i * n : (i + 1) * n] for i, mode in enumerate(modes)}

    def _reranked(self, questions: list[str], selection: Selection, modes: tuple[str, ...]) -> dict[str, list[list[Hit]]]:
        """The top `rerank_depth` candidates of each mode (filters and diversity applied),
        read with the question by the cross-encoder, the top k of its order kept; a hit's
        score is then the cross-encoder's. All pairs go through the model in one batch."""
        deep = replace(selection, k=max(selection.k, selection.rerank_depth), rerank=None)
        found = self.search_modes(questions, deep, modes)
        assert selection.rerank is not None
        reranker = self._reranker(selection.rerank)
        pairs = [(q, hit.text) for m in modes for q, hits in zip(questions, found[m]) for hit in hits]
        scores = iter(reranker.scores(pairs))
        reranked: dict[str, list[list[Hit]]] = {}
        for m in modes:
            reranked[m] = []
            for hits in found[m]:
                scored = [replace(hit, score=next(scores)) for hit in hits]
                reranked[m].append(sorted(scored, key=lambda h: -h.score)[: selection.k])
        return reranked

    def _reranker(self, name: str) -> Reranker:
        if self.reranker is None or self.reranker.name != name:
            if self.reranker is not None:
                self.reranker.release()
            self.reranker = Reranker(name, device=self.device)
        return self.reranker

    def _cited(self, hit: Hit, cite_as: dict[str, dict]) -> Hit:
        """The hit as cited: through the copy a filter admitted it by, if any; with the other
        places its text is stored for (`also`)."""
        copies = self.store.copies.get(hit.chunk_id, [])
        if not copies and hit.chunk_id not in cite_as:
            return hit
        place = cite_as.get(hit.chunk_id)
        cited = Hit.of(hit.chunk_id, hit.text, place, hit.score) if place is not None else hit
        places = [Hit.of(hit.chunk_id, "", copy, 0.0).cited for copy in copies if copy is not place]
        if place is not None:
            places.insert(0, hit.cited)
        return replace(cited, also=tuple(places))

    def _diversify(self, rankings: dict[str, list[Ranking]], selection: Selection, cite_as: dict[str, dict]) -> dict[str, list[Ranking]]:
        """Each ranking cut to k, with at most `max_per_section` chunks of one section and
        `max_per_page` of one page (0: no limit) among them."""
        k = selection.k
        if not selection.diverse:
            return {mode: [r[:k] for r in lists] for mode, lists in rankings.items()}
        source = self.store.vectors.sources({i for lists in rankings.values() for r in lists for i, _ in r})
        source.update({rep: place["source"] for rep, place in cite_as.items()})

        def section(item: tuple[str, float]) -> str | None:
            found = source.get(item[0], "")
            return found if "#" in found else None

        def page(item: tuple[str, float]) -> str:
            return page_of(source.get(item[0], ""))

        out: dict[str, list[Ranking]] = {}
        for mode, lists in rankings.items():
            out[mode] = []
            for r in lists:
                r = diversify(r, section, selection.max_per_section, len(r))
                out[mode].append(diversify(r, page, selection.max_per_page, k))
        return out

    def release_embedder(self) -> None:
        """Free the embedder and the reranker (and their GPU memory) for what runs next, keeping the store open."""
        if self.embedder is not None:
            self.embedder.release()
            self.embedder = None
        if self.reranker is not None:
            self.reranker.release()
            self.reranker = None

    def close(self) -> None:
        """Close the store and free the embedder."""
        self.release_embedder()
        self.store.close()


def fuse(dense: Ranking, lexical: Ranking, k: int) -> Ranking:
    """Hybrid: the two ranked lists fused by reciprocal rank."""
    return reciprocal_rank_fusion([dense, lexical], k, c=FUSION_C)
