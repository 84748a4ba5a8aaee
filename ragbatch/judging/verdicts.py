"""Read the judge's JSON back, and fold a row's verdicts into its output columns."""

from __future__ import annotations

import json
import math

from ragbatch.asking.answer_file import carry_values
from ragbatch.judging.inputs import Judged
from ragbatch.judging.prompts import Request
from ragbatch.judging.rubrics import SCORES

VERDICT_COLUMNS = [
    ("id", "string"),
    ("question", "string"),
    ("answer", "string"),
    ("quality", "int64"),  # 1-5 against the reference; null without one
    ("quality_expected", "double"),  # the score weighted by the judge's probabilities
    ("quality_reason", "string"),
    ("relevance", "int64"),
    ("relevance_reason", "string"),
    ("groundedness", "double"),  # share of the judged sentences the passages support
    ("sentences_judged", "int64"),
    ("unsupported", "list<string>"),  # the sentences they do not
    ("citations_checked", "int64"),  # sentences citing passages as [n], checked against those passages
    ("citations_supported", "int64"),  # of which the cited passages support
    ("unsupported_citations", "list<string>"),  # the others
    ("judge", "string"),
    ("judge_prompt_tokens", "int64"),
    ("judge_completion_tokens", "int64"),
    ("retries", "int64"),
    ("error", "string"),
]


class Unparsed(ValueError):
    """A verdict that is not what its schema asks (cut at max_tokens, say)."""


def parse_score(text: str) -> tuple[int, str]:
    """(score, reason) of a quality or relevance verdict."""
    verdict = _object(text)
    score, reason = verdict.get("score"), verdict.get("reason")
    if score not in SCORES or not isinstance(reason, str):
        raise Unparsed(f"expected a score of 1-5 and a reason, got {_short(text)}")
    return score, reason.strip()


def parse_sentences(text: str, count: int) -> list[bool]:
    """One true/false per sentence of a groundedness verdict."""
    verdict = _object(text)
    supported = [verdict.get(f"s{i}") for i in range(1, count + 1)]
    if not all(isinstance(value, bool) for value in supported):
        raise Unparsed(f"expected true or false for each of {count} sentences, got {_short(text)}")
    return [bool(value) for value in supported]


def parse_supported(text: str) -> bool:
    """The verdict of a citation check."""
    value = _object(text).get("supported")
    if not isinstance(value, bool):
        raise Unparsed(f"expected true or false, got {_short(text)}")
    return value


def expected_score(token_ids: list[int], logprobs: list | None, tokenizer) -> float | None:
    """The score weighted by the judge's own probabilities of 1-5 where it wrote the
    score (G-Eval's expected score): it ranks answers that the integer scores tie.

    `logprobs` has, per generated token, the top alternatives ({token id: Logprob}, raw
    model probabilities, before the grammar's mask). The score's position is the first
    generated token that is a digit 1-5 (the schema puts the score first). None where
    that position or its alternatives are not there."""
    for position, token_id in enumerate(token_ids):
        if _digit(tokenizer, token_id) is None:
            continue
        if not logprobs or position >= len(logprobs):
            return None
        weights: dict[int, float] = {}
        for alternative, logprob in logprobs[position].items():
            score = _digit(tokenizer, alternative)
            if score is not None:
                weights[score] = weights.get(score, 0.0) + math.exp(logprob.logprob)
        total = sum(weights.values())
        return sum(score * weight for score, weight in weights.items()) / total if total else None
    return None


def _digit(tokenizer, token_id: int) -> int | None:
    text = tokenizer.decode([token_id]).strip()
    return int(text) if text in {"1", "2", "3", "4", "5"} else None


def _object(text: str) -> dict:
    try:
        verdict = json.loads(text)
    except ValueError:
        raise Unparsed(f"not valid JSON: {_short(text)}") from None
    if not isinstance(verdict, dict):
        raise Unparsed(f"not a JSON object: {_short(text)}")
    return verdict


def _short(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def verdict_row(item: Judged, judge_name: str, schema) -> dict:
    """A row's verdict columns, empty, and the input's other columns (`schema`: the file's)."""
    row = item.row
    return {
        "id": row["id"],
        "question": row["question"],
        "answer": row["answer"],
        "quality": None,
        "quality_expected": None,
        "quality_reason": None,
        "relevance": None,
        "relevance_reason": None,
        "groundedness": None,
        "sentences_judged": None,
        "unsupported": None,
        "citations_checked": 0,
        "citations_supported": 0,
        "unsupported_citations": [],
        "judge": judge_name,
        "judge_prompt_tokens": 0,
        "judge_completion_tokens": 0,
        "retries": 0,
        "error": None,
        **carry_values(row, schema, None, VERDICT_COLUMNS, passed=frozenset({"answer"})),
    }


def fill(row: dict, request: Request, generation, tokenizer) -> None:
    """One request's verdict into its row's columns; raises Unparsed."""
    aspect = request.ask.aspect
    if aspect == "citation":
        backed = parse_supported(generation.text)
        row["citations_checked"] += 1
        if backed:
            row["citations_supported"] += 1
        else:
            row["unsupported_citations"].append(request.sentences[0])
        return
    if aspect == "groundedness":
        supported = parse_sentences(generation.text, len(request.sentences))
        row["sentences_judged"] = len(supported)
        row["groundedness"] = sum(supported) / len(supported)
        row["unsupported"] = [s for s, ok in zip(request.sentences, supported) if not ok]
        return
    score, reason = parse_score(generation.text)
    row[aspect], row[f"{aspect}_reason"] = score, reason
    if aspect == "quality":
        row["quality_expected"] = expected_score(generation.token_ids or [], generation.logprobs, tokenizer)
