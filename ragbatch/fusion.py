"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009) of several ranked id lists."""

from __future__ import annotations


def reciprocal_rank_fusion(
    rankings: list[list[tuple[str, float]]],
    k: int,
    c: int = 60,
    weights: list[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked `(id, score)` lists into the top `k` `(id, fused score)`, best first.

    An id at 1-based rank r in list i earns weights[i] / (c + r); an id absent from a list
    earns nothing from it. Only ranks matter: the input scores (cosine, BM25) are not
    comparable across retrievers, which is the point of RRF. Ties go to the smaller id, so
    the result does not depend on dict or input order.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"got {len(weights)} weights for {len(rankings)} rankings")

    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        seen: set[str] = set()
        for rank, (doc_id, _score) in enumerate(ranking, start=1):
            if doc_id in seen:  # a repeated id keeps its best rank only
                continue
            seen.add(doc_id)
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (c + rank)

    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return ordered[: max(k, 0)]
