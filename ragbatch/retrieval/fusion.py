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


def diversify(ranked: list, key, max_per_key: int, k: int) -> list:
    """The top `k` of `ranked` with at most `max_per_key` items per `key(item)` (None: no
    limit for that item); the items held back follow, in rank order, only if fewer than
    `k` others remain. `max_per_key` 0 keeps the ranking as it is."""
    if max_per_key <= 0:
        return ranked[:k]
    counts: dict = {}
    first, held = [], []
    for item in ranked:
        group = key(item)
        if group is None or counts.get(group, 0) < max_per_key:
            first.append(item)
            if group is not None:
                counts[group] = counts.get(group, 0) + 1
        else:
            held.append(item)
        if len(first) == k:
            break
    return (first + held)[:k]
