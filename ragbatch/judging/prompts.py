"""The judge's requests for one row, each within the judge's context window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ragbatch.generation.prompting import PromptTooLong, render_chat
from ragbatch.generation.rows import cited_numbers
from ragbatch.judging import rubrics
from ragbatch.judging.inputs import Judged
from ragbatch.judging.rubrics import Ask

CUT_MARKER = " [...]"


@dataclass
class Request:
    """One prompt for the judge: which row and aspect it rates, and what it sends."""

    index: int  # the row's position in the run's list
    ask: Ask
    token_ids: list[int]
    sentences: list[str]  # groundedness: the sentences judged, in order


def requests_for(index: int, item: Judged, aspects: tuple[str, ...], tokenizer, context_window: int) -> list[Request]:
    """The row's requests: quality where a reference is known, relevance, groundedness
    where passages are known (and the answer has a sentence). Raises PromptTooLong."""
    row = item.row
    question, answer = row["question"], row["answer"]
    made: list[Request] = []
    if "quality" in aspects and item.reference:
        reference = item.reference
        made.append(_fitted(index, tokenizer, context_window, lambda t, _: rubrics.quality(t[0], t[1], t[2]), [question, reference, answer], []))
    if "relevance" in aspects:
        made.append(_fitted(index, tokenizer, context_window, lambda t, _: rubrics.relevance(t[0], t[1]), [question, answer], []))
    sentences = rubrics.split_sentences(answer)
    if "groundedness" in aspects and item.passages and sentences:
        request = _fitted(index, tokenizer, context_window, lambda _, p: rubrics.groundedness(p, sentences), [], list(item.passages))
        request.sentences = sentences
        made.append(request)
        made += _citation_checks(index, item.passages, sentences, tokenizer, context_window)
    return made


def _citation_checks(index: int, passages: list[str], sentences: list[str], tokenizer, window: int) -> list[Request]:
    """One request per sentence that cites passages the prompt held: do those support it?"""
    made = []
    for sentence in sentences:
        numbers = sorted({n for n in cited_numbers(sentence) if 1 <= n <= len(passages)})
        if not numbers:
            continue
        cited = [(n, passages[n - 1]) for n in numbers]

        def make(texts: list[str], kept: list[str], numbers=numbers, sentence=sentence) -> Ask:
            return rubrics.citation(list(zip(numbers, kept)), sentence)

        request = _fitted(index, tokenizer, window, make, [], [text for _, text in cited])
        request.sentences = [sentence]
        made.append(request)
    return made


def _fitted(index: int, tokenizer, window: int, make: Callable[[list[str], list[str]], Ask], texts: list[str], passages: list[str]) -> Request:
    """The request with its texts cut until prompt and verdict fit the window: the last
    passages go first, then the longest text loses a quarter at a time."""
    for _ in range(64):
        ask = make(texts, passages)
        ids = render_chat(tokenizer, ask.system, ask.user, lead="Verdict:")
        if len(ids) + ask.max_tokens <= window:
            return Request(index, ask, ids, [])
        if len(passages) > 1:
            passages = passages[:-1]
            continue
        pieces = texts + passages
        longest = max(range(len(pieces)), key=lambda i: len(pieces[i]))
        if len(pieces[longest]) < 200:
            break
        cut = _cut(pieces[longest])
        if longest < len(texts):
            texts = [*texts[:longest], cut, *texts[longest + 1 :]]
        else:
            passages = [cut]
    raise PromptTooLong(f"the judge's prompt does not fit its {window}-token context window")


def _cut(text: str) -> str:
    """Three quarters of `text`, at a word boundary, marked as cut."""
    text = text.removesuffix(CUT_MARKER)
    keep = text[: len(text) * 3 // 4]
    return keep[: keep.rfind(" ")].rstrip() + CUT_MARKER if " " in keep else keep + CUT_MARKER
