"""What the judge is asked, and the shape its answer must take.

Three aspects, each one prompt per answer:

- quality: 1-5 against the reference answer, the scale of the Ray documentation
  assistant's GPT-4 judge (ray-project/llm-applications), so its tables compare;
- relevance: 1-5, does the answer address the question asked;
- groundedness: for each sentence of the answer, is it supported by the passages the
  answer was written from; and for each sentence that cites passages as `[n]`, do the
  passages it cites support it (the citation check).

Every verdict is JSON held to a schema by vLLM's structured outputs (xgrammar). Guided
decoding constrains a verdict's shape, not its length: a small model can repeat inside a
free string, or emit whitespace between fields, until max_tokens. So the schema puts the
score first, bounds the reason with `maxLength` (xgrammar 0.2.8 enforces it; a `pattern`
with a bounded repeat of 240 fails to compile there), and the engine allows no whitespace
between fields (vllm_engine.json_output_engine): a verdict closes within its token budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ASPECTS = ("quality", "relevance", "groundedness")  # groundedness includes the citation check
SCORES = [1, 2, 3, 4, 5]
REASON_CHARS = 160  # the reason's bound, in characters (the grammar enforces it): one short sentence
MAX_SENTENCES = 24  # groundedness judges at most this many sentences of an answer

QUALITY_SYSTEM = "\n".join(
    [
        "You grade answers to questions. Compare the generated answer with the reference answer, which is correct, and rate the generated answer's quality:",
        "5 - correct and complete: it says what the reference says that matters, and nothing wrong.",
        "4 - correct, with small omissions or imprecisions.",
        "3 - partly correct: some key points right, others missing or wrong.",
        "2 - mostly wrong, vague or off the point, with a little that is right.",
        "1 - wrong, unrelated, or no answer (saying it does not know counts as no answer).",
        "Judge the content, not the style or length. Reply with the score, then one short sentence of reason.",
    ]
)

RELEVANCE_SYSTEM = "\n".join(
    [
        "You grade answers to questions. Rate how directly the answer addresses the question that was asked, whether or not it is correct:",
        "5 - addresses exactly what was asked.",
        "4 - addresses it, with some unneeded material.",
        "3 - addresses part of it, or mostly something nearby.",
        "2 - touches the topic but not the question.",
        "1 - does not address the question, or gives no answer.",
        "Reply with the score, then one short sentence of reason.",
    ]
)

GROUNDEDNESS_SYSTEM = (
    "You check answers against their sources. For each numbered sentence of the answer, say whether the numbered passages support it: "
    "true if the passages state or directly imply what the sentence claims, false if the sentence adds anything the passages do not say. "
    'A sentence that makes no claim (a greeting, "I don\'t know") is true.'
)


CITATION_SYSTEM = (
    "You check citations. Say whether the cited passages support the sentence: true if they state or directly imply "
    "what the sentence claims, false if the sentence claims anything they do not say."
)


@dataclass(frozen=True)
class Ask:
    """One request to the judge: its messages and the structured output it must give."""

    aspect: str
    system: str
    user: str
    constraint: dict  # vLLM structured outputs (sampling_params' `constraint`)
    max_tokens: int


def score_schema() -> dict:
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "enum": SCORES},
            "reason": {"type": "string", "maxLength": REASON_CHARS},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }


def sentences_schema(count: int) -> dict:
    """One boolean per sentence, as properties s1..sN in order: the grammar fixes how many."""
    names = [f"s{i}" for i in range(1, count + 1)]
    return {
        "type": "object",
        "properties": {name: {"type": "boolean"} for name in names},
        "required": names,
        "additionalProperties": False,
    }


# Room for the JSON around the score and reason: a token per character at worst.
SCORE_MAX_TOKENS = REASON_CHARS + 32


def quality(question: str, reference: str, answer: str) -> Ask:
    user = f"Question: {question.strip()}\n\nReference answer: {reference.strip()}\n\nGenerated answer: {answer.strip()}"
    return Ask("quality", QUALITY_SYSTEM, user, _json(score_schema()), SCORE_MAX_TOKENS)


def relevance(question: str, answer: str) -> Ask:
    user = f"Question: {question.strip()}\n\nAnswer: {answer.strip()}"
    return Ask("relevance", RELEVANCE_SYSTEM, user, _json(score_schema()), SCORE_MAX_TOKENS)


def groundedness(passages: list[str], sentences: list[str]) -> Ask:
    context = "".join(f"[{i}] {p.strip()}\n\n" for i, p in enumerate(passages, 1))
    claims = "\n".join(f"s{i}: {s}" for i, s in enumerate(sentences, 1))
    user = f"Passages:\n{context}Answer sentences:\n{claims}"
    return Ask("groundedness", GROUNDEDNESS_SYSTEM, user, _json(sentences_schema(len(sentences))), 8 * len(sentences) + 16)


def citation(cited: list[tuple[int, str]], sentence: str) -> Ask:
    """Do the passages a sentence cites, (number, text) as numbered in the answer's prompt, support it?"""
    schema = {"type": "object", "properties": {"supported": {"type": "boolean"}}, "required": ["supported"], "additionalProperties": False}
    context = "".join(f"[{n}] {text.strip()}\n\n" for n, text in cited)
    return Ask("citation", CITATION_SYSTEM, f"Cited passages:\n{context}Sentence: {sentence}", _json(schema), 16)


def _json(schema: dict) -> dict:
    """Structured outputs for `schema` (the engine allows no free whitespace between
    fields: vllm_engine.json_output_engine)."""
    return {"json": schema}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9`*])|\n+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def split_sentences(answer: str) -> list[str]:
    """The answer's sentences (and list items), in order, without list markers; at most
    MAX_SENTENCES. Lines of only punctuation or markup are left out."""
    pieces = (_LIST_MARKER.sub("", piece).strip() for piece in _SENTENCE_END.split(answer))
    return [piece for piece in pieces if re.search(r"\w", piece)][:MAX_SENTENCES]
