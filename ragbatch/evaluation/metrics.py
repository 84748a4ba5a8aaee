"""Retrieval and answer metrics: pure functions over ranked sources and answers.

A reference question is `{"id", "question", "source", "answers"?}` where `source` is a page
(`Super_Bowl_50.txt`, `data/loading-data.html`) optionally followed by `#section-anchor`.

Per-question row (built by `question_row`, aggregated by `summarize`)::

    {
      "id": str, "question": str,
      "source": str,                 # gold source, as given by the reference
      "answers": list[str],          # gold answer strings; [] when the reference has none
      "missing_source": bool,        # gold page is not in the store: reported, not scored
      "ranked_sources": list[str],   # retrieved chunk sources, best first
      "rank": int | None,            # 1-based rank of the first chunk from the gold page
      "section_rank": int | None,    # same, exact source match; None without an anchor
      "answer_rank": int | None,     # first chunk from the gold page containing a gold answer;
                                     #   None without gold answers
      "hit@K": bool,                 # rank <= K, one key per K in `ks`
      "section_hit@K": bool | None,  # None when the gold source has no anchor
      "answer_hit@K": bool | None,   # None when the reference has no answers
      "answer": str | None,          # generated answer, None when retrieval only
      "em": float | None, "f1": float | None,   # SQuAD v1.1, None without answer or golds
      "dont_know": bool | None,      # the generated answer declines; None without answer
    }

Ranks rather than booleans are the source of truth: `summarize` derives hit@k for any k
from them, so the `hit@K` keys are only a convenience for people reading the rows.

Questions whose gold page is missing from the store count in `missing_sources` and are left
out of every rate: the retriever cannot be blamed for a page it was never given, and
silently counting them as misses would mix a corpus problem into a retrieval figure.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

from ragbatch.retrieval.sources import has_anchor, page_of

LEVELS = ("page", "section")


# -- sources ---------------------------------------------------------------------------


def _same_source(candidate: str, gold: str, level: str) -> bool:
    if level == "page":
        return page_of(candidate) == page_of(gold)
    if level == "section":
        return candidate == gold
    raise ValueError(f"level must be one of {LEVELS}, not {level!r}")


def first_hit_rank(ranked_sources: list[str], gold: str, level: str = "page", anchors: list | None = None) -> int | None:
    """1-based rank of the first source matching `gold` at `level`, or None.

    `anchors`, parallel to `ranked_sources`, are the other link targets inside each chunk's
    section (ingest/readers/): at section level a gold `page#term-Task` also matches a chunk of
    the section on that page that holds the anchor `term-Task`.
    """
    gold_anchor = gold.split("#", 1)[1] if level == "section" and "#" in gold else None
    for rank, source in enumerate(ranked_sources, start=1):
        if _same_source(source, gold, level):
            return rank
        if gold_anchor and anchors and gold_anchor in anchors[rank - 1] and page_of(source) == page_of(gold):
            return rank
    return None


# -- answer containment (DPR-style top-k accuracy) -------------------------------------


def _fold(text: str) -> str:
    # Case-insensitive, and a line break inside a chunk must not hide an answer.
    return " ".join(text.casefold().split())


def first_answer_rank(ranked: list[tuple[str, str]], gold_source: str, answers: list[str]) -> int | None:
    """1-based rank of the first (source, text) chunk from the gold page containing an answer."""
    folded = [_fold(a) for a in answers if a.strip()]
    if not folded:
        return None
    for rank, (source, text) in enumerate(ranked, start=1):
        if page_of(source) != page_of(gold_source):
            continue
        chunk = _fold(text)
        if any(answer in chunk for answer in folded):
            return rank
    return None


# -- SQuAD v1.1 answer scores (official evaluate-v1.1.py definitions) --------------------

_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop articles (a, an, the), collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _f1_one(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def f1(prediction: str, golds: list[str]) -> float:
    """Token-overlap F1 against the best-matching gold answer (0.0 without golds)."""
    return max((_f1_one(prediction, g) for g in golds), default=0.0)


# -- "I don't know" -----------------------------------------------------------------------

# After normalisation apostrophes are gone ("don't" -> "dont") and punctuation is spaces.
_LEAD_IN = r"(?:(?:sorry|unfortunately|im afraid|i am afraid|but|however)\s+)*"
_DONT_KNOW = re.compile(r"^" + _LEAD_IN + r"(?:i\s+)?(?:dont|do\s+not)\s+know\b")


def is_dont_know(answer: str) -> bool:
    """True when the answer opens by declining: "I don't know", "I do not know.", "Sorry, don't know"...

    Only the opening counts, so "If you don't know the size, use ..." is an answer.
    """
    text = answer.lower().replace("\u2019", "'").replace("'", "")
    text = " ".join(re.sub(r"[^\w\s]", " ", text).split())
    return bool(_DONT_KNOW.match(text))


# -- one question, then all of them -----------------------------------------------------


def question_row(
    reference: dict,
    ranked: list[tuple[str, str]],
    ks: Iterable[int],
    store_pages: set[str] | None = None,
    answer: str | None = None,
    anchors: list | None = None,
) -> dict:
    """Score one question: `ranked` is the retrieved (source, text) chunks, best first.

    `store_pages` is the set of pages in the store (see `page_of`); when given, a gold page
    outside it marks the row `missing_source`. `answer` is the generated answer, if any.
    `anchors` are each chunk's section's other link targets (see `first_hit_rank`).
    """
    gold = reference["source"]
    answers = list(reference.get("answers") or [])
    ranked_sources = [source for source, _ in ranked]
    rank = first_hit_rank(ranked_sources, gold, "page")
    section_rank = first_hit_rank(ranked_sources, gold, "section", anchors) if has_anchor(gold) else None
    answer_rank = first_answer_rank(ranked, gold, answers) if answers else None

    row = {
        "id": reference.get("id"),
        "question": reference.get("question"),
        "source": gold,
        "answers": answers,
        "missing_source": store_pages is not None and page_of(gold) not in store_pages,
        "ranked_sources": ranked_sources,
        "rank": rank,
        "section_rank": section_rank,
        "answer_rank": answer_rank,
    }
    for k in ks:
        row[f"hit@{k}"] = _within(rank, k)
        row[f"section_hit@{k}"] = _within(section_rank, k) if has_anchor(gold) else None
        row[f"answer_hit@{k}"] = _within(answer_rank, k) if answers else None
    row["answer"] = answer
    scorable = answer is not None and bool(answers)
    row["em"] = exact_match(answer, answers) if answer is not None and scorable else None
    row["f1"] = f1(answer, answers) if answer is not None and scorable else None
    row["dont_know"] = is_dont_know(answer) if answer is not None else None
    return row


def _within(rank: int | None, k: int) -> bool:
    return rank is not None and rank <= k


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _hit_rates(rows: list[dict], rank_key: str, ks: list[int]) -> dict[int, float | None] | None:
    if not rows:
        return None
    return {k: _mean([float(_within(r[rank_key], k)) for r in rows]) for k in ks}


def summarize(rows: list[dict], ks: list[int]) -> dict:
    """Aggregate `question_row` rows.

    Returns `{"questions", "missing_sources", "scored", "hit_at": {k: rate},
    "section_hit_at": {k: rate} | None, "answer_hit_at": {k: rate} | None, "mrr"}` plus
    `"exact_match"`, `"f1"` (rows with a generated answer and gold answers) and
    `"dont_know_rate"` (rows with a generated answer) when any row has an answer.

    Rows with `missing_source` are counted, then left out of every rate. Section rates use
    only the questions whose gold source has an anchor (None if none has); answer-hit rates
    only those with gold answers (None if none has). A rate over no questions is None.
    """
    scored = [r for r in rows if not r["missing_source"]]
    with_anchor = [r for r in scored if has_anchor(r["source"])]
    with_answers = [r for r in scored if r.get("answers")]

    summary = {
        "questions": len(rows),
        "missing_sources": len(rows) - len(scored),
        "scored": len(scored),
        "hit_at": _hit_rates(scored, "rank", ks) or {k: None for k in ks},
        "section_hit_at": _hit_rates(with_anchor, "section_rank", ks),
        "answer_hit_at": _hit_rates(with_answers, "answer_rank", ks),
        "mrr": _mean([0.0 if r["rank"] is None else 1.0 / r["rank"] for r in scored]),
    }

    answered = [r for r in scored if r.get("answer") is not None]
    if answered:
        graded = [r for r in answered if r.get("answers")]
        summary["exact_match"] = _mean([exact_match(r["answer"], r["answers"]) for r in graded])
        summary["f1"] = _mean([f1(r["answer"], r["answers"]) for r in graded])
        summary["dont_know_rate"] = _mean([float(is_dont_know(r["answer"])) for r in answered])
    return summary
