"""One question's answer row, the same for `ask` (a Parquet row) and `serve` (a JSON
object), and the per-question flow both follow: sources -> prompt -> generation -> row.

`start_row` holds what retrieval decided (sources, chunk ids, scores) and builds the
prompt within the model's context; `finish_row` adds what generation returned: the
answer, exact token counts from vLLM, the cost from the price table, and optional
tiktoken counts. A prompt that cannot fit raises PromptTooLong: `ask` turns it into an
error row, `serve` into a 413.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragbatch.generation.prompting import build_prompt
from ragbatch.generation.settings import GenerationSetup
from ragbatch.generation.tokencount import count
from ragbatch.generation.vllm_engine import Generation
from ragbatch.store.records import Hit


@dataclass
class Prompted:
    """A question ready to generate: its row so far and its prompt's token ids."""

    row: dict
    prompt_ids: list[int]


def base_row(question: dict, hits: list[Hit], llm: str, embedder: str, carried: dict | None = None) -> dict:
    """The row before generation; `carried` holds the question's other input fields under
    their output column names (ask's answer file decides them; serve has none)."""
    return {
        "id": question["id"],
        "question": question["question"],
        "answer": None,
        "sources": [h.cited for h in hits],
        "chunk_ids": [h.chunk_id for h in hits],
        "scores": [round(h.score, 6) for h in hits],
        "passages_used": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "llm": llm,
        "embedder": embedder,
        "finish_reason": None,
        "citations": [],
        "citations_dropped": 0,
        "error": None,
        **(carried or {}),
    }


def start_row(
    setup: GenerationSetup,
    tokenizer,
    context_window: int,
    row: dict,
    hits: list[Hit],
    max_tokens: int,
    system_prompt: str | None = None,
) -> Prompted:
    """`row` (a base_row) with its prompt: the question and the top passages that fit
    the context window beside `max_tokens` of answer. Raises PromptTooLong."""
    prompt = build_prompt(tokenizer, row["question"], [h.text for h in hits], context_window, max_tokens, system_prompt or setup.system_prompt)
    row["passages_used"] = prompt.used
    counter, name = setup.inputs.counter, setup.options.count_tokens
    if counter is not None:
        # Counted here, with the rest of the tokenizer's work: `ask` builds prompts on a
        # thread of their own, and one tokenizer must not be used by two threads at once.
        row[f"prompt_tokens_{name}"] = count(counter, tokenizer.decode(prompt.token_ids))
    return Prompted(row, prompt.token_ids)


def finish_row(setup: GenerationSetup, prompted: Prompted, generation: Generation) -> dict:
    """The row filled from a finished generation; with a token counter (tiktoken), the
    `completion_tokens_<encoding>` column too (start_row counted the prompt)."""
    row = prompted.row
    row.update(
        answer=generation.text.strip(),
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        cost_usd=setup.price.cost(generation.prompt_tokens, generation.completion_tokens),
        finish_reason=generation.finish_reason,
    )
    row["citations"], row["citations_dropped"] = citations(row["answer"], row["sources"][: row["passages_used"]])
    counter, name = setup.inputs.counter, setup.options.count_tokens
    if counter is not None:
        row[f"completion_tokens_{name}"] = count(counter, row["answer"])
    return row


_MARKER = re.compile(r"\[(\d+(?:\s*[,;-]\s*\d+)*)\]")


def citations(answer: str, passages: list[str]) -> tuple[list[str], int]:
    """The sources an answer cites with the prompt's `[n]` markers (`[1, 3]`, `[2-3]` too),
    in the order first cited, and how many markers pointed to no passage the prompt held."""
    cited: dict[str, None] = {}
    dropped = 0
    for number in cited_numbers(answer):
        if 1 <= number <= len(passages):
            cited[passages[number - 1]] = None
        else:
            dropped += 1
    return list(cited), dropped


def cited_numbers(text: str) -> list[int]:
    """The passage numbers a text's `[n]` markers name, in order (repeats kept)."""
    return [number for marker in _MARKER.finditer(text) for number in _numbers(marker.group(1))]


def _numbers(text: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"\s*[,;]\s*", text):
        low, _, high = part.partition("-")
        numbers += range(int(low), int(high) + 1) if high and int(high) - int(low) < 20 else [int(low)]
    return numbers
