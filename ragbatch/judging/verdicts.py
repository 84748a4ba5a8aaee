"""Read the judge's JSON back, and fold a row's verdicts into its output columns."""

from __future__ import annotations

import json
import math

from ragbatch.judging.rubrics import SCORES


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
