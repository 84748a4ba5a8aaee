"""Metrics checked against values computed by hand on tiny made-up questions."""

import pytest

from ragbatch.evaluation.metrics import (
    exact_match,
    f1,
    first_hit_rank,
    is_dont_know,
    normalize_answer,
    page_of,
    question_row,
    summarize,
)

KS = [1, 3, 5]

# Four Ray-docs-like questions. Gold rank at page level: 1, 3, miss, 2.
# At section level: q1 rank 1, q2 rank 5 (rank 3 is the right page, wrong section), q3 miss, q4 miss.
RAY = [
    {"id": "q1", "question": "batch format?", "source": "data/transforming-data.html#configuring-batch-format"},
    {"id": "q2", "question": "actors?", "source": "ray-core/actors.html#actor-lifetimes"},
    {"id": "q3", "question": "tune?", "source": "tune/index.html#why-tune"},
    {"id": "q4", "question": "serve?", "source": "serve/index.html#quickstart"},
]
RAY_RANKED = {
    "q1": ["data/transforming-data.html#configuring-batch-format", "data/loading-data.html#csv", "a.html"],
    "q2": ["a.html#x", "b.html", "ray-core/actors.html#actor-handles", "c.html", "ray-core/actors.html#actor-lifetimes"],
    "q3": ["a.html", "b.html", "c.html", "d.html", "e.html", "tune/index.html#why-tune"],
    "q4": ["a.html", "serve/index.html#architecture"],
}


def ray_rows(store_pages=None):
    return [question_row(q, [(s, "") for s in RAY_RANKED[q["id"]]], KS, store_pages=store_pages) for q in RAY]


def test_page_of_strips_anchor():
    assert page_of("data/transforming-data.html#configuring-batch-format") == "data/transforming-data.html"
    assert page_of("Super_Bowl_50.txt") == "Super_Bowl_50.txt"


def test_source_hit_page_and_section_levels():
    row = ray_rows()[1]  # q2
    assert [row[f"hit@{k}"] for k in KS] == [False, True, True]
    assert [row[f"section_hit@{k}"] for k in KS] == [False, False, True]
    with pytest.raises(ValueError):
        first_hit_rank(RAY_RANKED["q2"], RAY[1]["source"], "chapter")


def test_ranks_give_the_reciprocal_rank():
    q1, q2 = ray_rows()[:2]
    assert 1 / q1["rank"] == 1.0
    assert 1 / q2["rank"] == pytest.approx(1 / 3)
    assert 1 / q2["section_rank"] == pytest.approx(1 / 5)
    assert question_row({"source": "b.html"}, [("a.html", "")], KS)["rank"] is None  # reciprocal rank 0


def test_summarize_page_and_section_rates():
    summary = summarize(ray_rows(), KS)
    assert summary["questions"] == 4
    assert summary["missing_sources"] == 0
    # page ranks 1, 3, miss(6 is beyond 5), 2
    assert summary["hit_at"] == {1: 0.25, 3: 0.75, 5: 0.75}
    # q3's page is at rank 6: a hit for MRR, 1/6.
    assert summary["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 1 / 2) / 4)
    # section ranks 1, 5, 6, miss
    assert summary["section_hit_at"] == {1: 0.25, 3: 0.25, 5: 0.5}
    assert summary["answer_hit_at"] is None  # no reference has answers
    assert "exact_match" not in summary and "dont_know_rate" not in summary


def test_mrr_ranks_1_3_miss():
    refs = [{"id": i, "source": "gold.txt"} for i in "abc"]
    ranked = [["gold.txt", "x"], ["x", "y", "gold.txt"], ["x", "y"]]
    rows = [question_row(r, [(s, "") for s in rs], KS) for r, rs in zip(refs, ranked)]
    assert summarize(rows, KS)["mrr"] == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_section_metrics_none_without_anchors():
    row = question_row({"id": "s", "source": "Super_Bowl_50.txt"}, [("Super_Bowl_50.txt", "")], KS)
    assert row["section_rank"] is None and row["section_hit@1"] is None
    assert summarize([row], KS)["section_hit_at"] is None


def test_missing_sources_counted_and_excluded():
    store_pages = {page_of(s) for ranked in RAY_RANKED.values() for s in ranked} - {"tune/index.html"}
    rows = ray_rows(store_pages)
    assert [r["missing_source"] for r in rows] == [False, False, True, False]
    summary = summarize(rows, KS)
    assert summary["questions"] == 4
    assert summary["missing_sources"] == 1
    assert summary["scored"] == 3
    # q1, q2, q4 only: page ranks 1, 3, 2
    assert summary["hit_at"] == pytest.approx({1: 1 / 3, 3: 1.0, 5: 1.0})
    assert summary["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_all_sources_missing_gives_no_rates():
    summary = summarize(ray_rows(store_pages=set()), KS)
    assert summary["missing_sources"] == 4
    assert summary["hit_at"] == {1: None, 3: None, 5: None}
    assert summary["mrr"] is None


# SQuAD-like: answer containment ------------------------------------------------------

BOWL = "Super_Bowl_50.txt"
SQUAD = [
    {"id": "a", "source": BOWL, "answers": ["Denver Broncos"]},
    {"id": "b", "source": BOWL, "answers": ["Santa Clara, California", "Levi's Stadium"]},
    {"id": "c", "source": BOWL, "answers": ["February 7, 2016"]},
]
SQUAD_RANKED = {
    # answer in the first chunk, different case
    "a": [(BOWL, "The DENVER BRONCOS won."), ("Other.txt", "x")],
    # rank 1: another page containing the answer (does not count); rank 2: gold page, no
    # answer; rank 3: gold page, second gold answer split by a line break
    "b": [("Other.txt", "Levi's Stadium is big"), (BOWL, "no answer here"), (BOWL, "held at Levi's\nStadium")],
    # right page, never the answer
    "c": [(BOWL, "The game was played in 2016."), (BOWL, "February 8")],
}


def test_answer_hit_case_insensitive_and_source_bound():
    a, b, c = (question_row(q, SQUAD_RANKED[q["id"]], KS) for q in SQUAD)
    assert a["answer_hit@1"]
    assert [b[f"answer_hit@{k}"] for k in KS] == [False, True, True]
    assert not c["answer_hit@5"]
    # the answer text in a chunk of the wrong page never counts
    assert not question_row({"source": BOWL, "answers": ["Denver Broncos"]}, [("Other.txt", "Denver Broncos")], [1])["answer_hit@1"]


def test_summarize_answer_level_and_squad_scores():
    answers = {"a": "the Denver Broncos", "b": "Santa Clara", "c": "I don't know."}
    rows = [question_row(q, SQUAD_RANKED[q["id"]], KS, answer=answers[q["id"]]) for q in SQUAD]
    summary = summarize(rows, KS)
    # page ranks 1, 2, 1; answer ranks 1, 3, miss
    assert summary["hit_at"] == {1: pytest.approx(2 / 3), 3: 1.0, 5: 1.0}
    assert summary["answer_hit_at"] == pytest.approx({1: 1 / 3, 3: 2 / 3, 5: 2 / 3})
    assert summary["section_hit_at"] is None
    # EM: 1, 0, 0. F1: 1, "santa clara" vs "santa clara california" = 2*1*(2/3)/(1+2/3) = 0.8, 0
    assert summary["exact_match"] == pytest.approx(1 / 3)
    assert summary["f1"] == pytest.approx((1 + 0.8 + 0) / 3)
    assert summary["dont_know_rate"] == pytest.approx(1 / 3)
    assert rows[0]["em"] == 1.0 and rows[2]["dont_know"] is True


def test_rows_without_generation_have_no_answer_scores():
    row = question_row(SQUAD[0], SQUAD_RANKED["a"], KS)
    assert row["answer"] is None and row["em"] is None and row["f1"] is None and row["dont_know"] is None
    assert row["answer_hit@1"] is True


# SQuAD v1.1 definitions --------------------------------------------------------------


def test_normalize_answer():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an Apple, a day") == "apple day"
    assert normalize_answer("Levi's Stadium") == "levis stadium"


def test_exact_match():
    assert exact_match("the Denver Broncos", ["Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert exact_match("Levi's Stadium.", ["Santa Clara", "levis stadium"]) == 1.0
    assert exact_match("anything", []) == 0.0


def test_f1():
    assert f1("the Denver Broncos", ["Denver Broncos"]) == 1.0
    # pred {denver}, gold {denver, broncos}: P=1, R=1/2 -> 2/3
    assert f1("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)
    # pred {broncos, won, title}, gold {denver, broncos}: P=1/3, R=1/2 -> 0.4
    assert f1("Broncos won title", ["Denver Broncos"]) == pytest.approx(0.4)
    # max over golds
    assert f1("Denver", ["Carolina Panthers", "Denver"]) == 1.0
    assert f1("Carolina", ["Denver Broncos"]) == 0.0
    assert f1("the", ["Denver"]) == 0.0  # empty after normalisation
    assert f1("anything", []) == 0.0


@pytest.mark.parametrize(
    "answer",
    [
        "I don't know",
        "I do not know.",
        "i dont know",
        "Don't know!",
        "I DON\u2019T KNOW",
        "Sorry, I don't know the answer.",
        "I don't know. The context does not say.",
    ],
)
def test_dont_know_detected(answer):
    assert is_dont_know(answer)


@pytest.mark.parametrize(
    "answer",
    ["Denver Broncos", "If you don't know the batch size, use 'default'.", "I know: 42", "", "unknown"],
)
def test_dont_know_not_detected(answer):
    assert not is_dont_know(answer)


def test_section_hit_through_an_anchor_inside_the_section():
    # The gold anchor is a glossary term inside the page's section, not the section's own id.
    gold = "ray-references/glossary.html#term-Task"
    ranked = ["a.html#x", "ray-references/glossary.html#ray-glossary"]
    anchors = [["term-Task"], ["term-Actor", "term-Task"]]
    row = question_row({"id": "t", "question": "task?", "source": gold}, [(s, "") for s in ranked], KS, anchors=anchors)
    assert (row["rank"], row["section_rank"]) == (2, 2)  # a.html holds an anchor of that name, but another page
    assert question_row({"id": "t", "question": "task?", "source": gold}, [(s, "") for s in ranked], KS)["section_rank"] is None
