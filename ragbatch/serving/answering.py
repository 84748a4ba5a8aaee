"""One question through `ask`'s pipeline, for a request: retrieve, build the prompt, generate
(streamed), and fill `ask`'s row with exact token counts and cost.

The pieces are `ask`'s own: prompting.build_prompt with the model's tokenizer and context
window, rows.base_row/finish_row, the price table, tiktoken counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ragbatch.errors import RagbatchError


class BadRequest(RagbatchError):
    """A request the pipeline refuses: HTTP `status`, the body `field` it is about."""

    def __init__(self, status: int, field: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.field, self.extra = status, field, extra


@dataclass
class Pending:
    """A retrieved question with its prompt, ready to generate."""

    row: dict
    prompt_ids: list[int]
    hits: list
    version: str


class Service:
    """The store, the engine and the answer's settings, shared by every request."""

    def __init__(self, prepared, metrics, notify=None):
        from ragbatch.serving.engine import AsyncEngine
        from ragbatch.serving.retrieval import LiveRetriever

        self.prepared, self.metrics = prepared, metrics
        options = prepared.options
        self.counter = None
        if options.count_tokens:
            from ragbatch.tokencount import encoding

            self.counter = encoding(options.count_tokens)
        self.retriever = LiveRetriever(options.store, device=prepared.device, metrics=metrics, notify=notify)
        try:
            self.engine = AsyncEngine(prepared.llm_path, options.max_model_len, prepared.device, options.seed, prepared.engine, metrics)
        except BaseException:
            self.retriever.close()
            raise

    @property
    def llm(self) -> str:
        return self.prepared.llm_name

    async def search(self, question: str, selection):
        try:
            return await self.retriever.search(question, selection)
        except RagbatchError as exc:
            if str(exc).startswith("--where"):  # a field the chunks do not have
                raise BadRequest(422, "where", str(exc)) from None
            raise BadRequest(503, None, str(exc)) from None  # the store: a new version that cannot be read, say

    async def retrieve(self, question: str, qid: str | None, selection, max_tokens: int, system_prompt: str | None = None) -> Pending:
        from ragbatch.prompting import PromptTooLong, build_prompt
        from ragbatch.questions import text_id
        from ragbatch.rows import base_row

        window = self.engine.context_window
        if max_tokens >= window:
            raise BadRequest(422, "max_tokens", f"max_tokens {max_tokens} leaves no room for a prompt in the {window}-token context window")
        found = await self.search(question, selection)
        row = base_row({"id": qid or text_id(question), "question": question}, found.hits, self.llm, found.embedder)
        try:
            prompt = build_prompt(
                self.engine.tokenizer, question, [h.text for h in found.hits], window, max_tokens, system_prompt or self.prepared.system_prompt
            )
        except PromptTooLong as exc:
            raise BadRequest(413, "question", f"prompt too long: {exc}", prompt_tokens=exc.tokens, budget=exc.budget, context_window=window) from None
        row["passages_used"] = prompt.used
        return Pending(row, prompt.token_ids, found.hits, found.version)

    async def answer(
        self, pending: Pending, max_tokens: int, temperature: float, seed: int | None, ignore_eos: bool = False
    ) -> AsyncIterator[tuple[str, dict | None]]:
        """Yield (new text, None) while generating, then ("", the finished row)."""
        from ragbatch.rows import finish_row

        async for delta, generation in self.engine.generate(pending.prompt_ids, max_tokens, temperature, seed, ignore_eos):
            if generation is None:
                yield delta, None
                continue
            row = finish_row(
                pending.row, generation, self.prepared.price, self.counter, self.prepared.options.count_tokens, self.engine.tokenizer, pending.prompt_ids
            )
            self.metrics.prompt_tokens.inc(generation.prompt_tokens)
            self.metrics.completion_tokens.inc(generation.completion_tokens)
            yield delta, row

    def close(self) -> None:
        self.engine.shutdown()
        self.retriever.close()
