"""Questions with their retrieved passages -> finished answer rows, through one engine.

The one loop both executors run: `ask` in this process, and each vLLM replica of
`ask --executor ray` (ray_answers.py) on its share of the questions. Prompts are built
on a thread while the engine already generates the first ones (Generator.stream), so the
engine never waits for the whole batch's prompts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ragbatch.generation.batch import Generator
from ragbatch.generation.prompting import PromptTooLong
from ragbatch.generation.rows import Prompted, base_row, finish_row, start_row
from ragbatch.generation.settings import GenerationSetup
from ragbatch.store.records import Hit


def answer_rows(
    setup: GenerationSetup,
    generator: Generator,
    questions: list[tuple[dict, dict]],
    hits: list[list[Hit]],
    embedder: str,
    max_tokens: int,
    temperature: float,
) -> Iterator[dict]:
    """One finished row per question, in the order answers finish; `questions` holds
    (question, its carried input columns). A prompt that cannot fit the context window
    gives an error row (`error` set) without reaching the engine."""
    ready: list[Prompted] = []
    too_long: deque[dict] = deque()  # filled on the prompt-building thread

    def prompts() -> Iterator[list[int]]:
        for (question, carried), found in zip(questions, hits):
            row = base_row(question, found, setup.llm_name, embedder, carried)
            try:
                prompted = start_row(setup, generator.tokenizer, generator.context_window, row, found, max_tokens)
            except PromptTooLong as exc:
                too_long.append({**row, "error": f"prompt too long: {exc}"})
                continue
            ready.append(prompted)  # before its prompt is handed over: its index is len(ready) - 1
            yield prompted.prompt_ids

    for j, generation in generator.stream(prompts(), max_tokens, temperature, setup.options.seed):
        while too_long:
            yield too_long.popleft()
        yield finish_row(setup, ready[j], generation)
    yield from too_long
