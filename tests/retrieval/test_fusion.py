"""Reciprocal rank fusion against scores worked out by hand."""

import pytest

from ragbatch.retrieval.fusion import reciprocal_rank_fusion

# Input scores are deliberately on different scales: RRF must only use the ranks.
DENSE = [("a", 0.91), ("b", 0.90), ("c", 0.20)]
SPARSE = [("b", 17.0), ("d", 9.5), ("a", 1.2)]


def test_two_lists_default_c():
    fused = reciprocal_rank_fusion([DENSE, SPARSE], k=10)
    # a: 1/61 + 1/63, b: 1/62 + 1/61, c: 1/63 (dense only), d: 1/62 (sparse only)
    assert [doc_id for doc_id, _ in fused] == ["b", "a", "d", "c"]
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["d"] == pytest.approx(1 / 62)
    assert scores["c"] == pytest.approx(1 / 63)


def test_small_c():
    fused = reciprocal_rank_fusion([[("a", 1.0), ("b", 0.5)], [("b", 3.0), ("c", 2.0)]], k=5, c=1)
    # a: 1/2, b: 1/3 + 1/2 = 5/6, c: 1/3
    assert fused == [("b", pytest.approx(5 / 6)), ("a", pytest.approx(1 / 2)), ("c", pytest.approx(1 / 3))]


def test_truncates_to_k():
    assert [d for d, _ in reciprocal_rank_fusion([DENSE, SPARSE], k=2)] == ["b", "a"]
    assert reciprocal_rank_fusion([DENSE, SPARSE], k=0) == []


def test_weights():
    fused = reciprocal_rank_fusion([DENSE, SPARSE], k=10, weights=[2.0, 1.0])
    # a: 2/61 + 1/63 = 0.048660, b: 2/62 + 1/61 = 0.048652, c: 2/63, d: 1/62
    assert [d for d, _ in fused] == ["a", "b", "c", "d"]
    assert dict(fused)["a"] == pytest.approx(2 / 61 + 1 / 63)
    assert dict(fused)["b"] == pytest.approx(2 / 62 + 1 / 61)
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([DENSE, SPARSE], k=3, weights=[1.0])


def test_ties_break_by_id_whatever_the_input_order():
    first = reciprocal_rank_fusion([[("y", 1), ("x", 1)], [("x", 1), ("y", 1)]], k=2)
    second = reciprocal_rank_fusion([[("x", 1), ("y", 1)], [("y", 1), ("x", 1)]], k=2)
    assert [d for d, _ in first] == [d for d, _ in second] == ["x", "y"]


def test_repeated_id_keeps_its_best_rank():
    fused = reciprocal_rank_fusion([[("a", 3), ("a", 2), ("b", 1)]], k=5)
    assert fused == [("a", pytest.approx(1 / 61)), ("b", pytest.approx(1 / 63))]


def test_single_and_empty_rankings():
    assert [d for d, _ in reciprocal_rank_fusion([DENSE], k=3)] == ["a", "b", "c"]
    assert reciprocal_rank_fusion([[], []], k=3) == []
    assert reciprocal_rank_fusion([], k=3) == []


def test_diversify_caps_items_per_group_and_refills_from_held_back():
    from ragbatch.retrieval.fusion import diversify

    ranked = [("a1", 9), ("a2", 8), ("b1", 7), ("a3", 6), ("n1", 5), ("n2", 4), ("c1", 3)]
    group = {"a": "page-a", "b": "page-b", "c": "page-c", "n": None}  # None: never limited
    key = lambda item: group[item[0][0]]  # noqa: E731
    assert [i for i, _ in diversify(ranked, key, 1, 4)] == ["a1", "b1", "n1", "n2"]
    assert [i for i, _ in diversify(ranked, key, 2, 4)] == ["a1", "a2", "b1", "n1"]
    # Held-back items fill the list only when nothing else is left.
    assert [i for i, _ in diversify(ranked, key, 1, 7)] == ["a1", "b1", "n1", "n2", "c1", "a2", "a3"]
    assert diversify(ranked, key, 0, 3) == ranked[:3]
