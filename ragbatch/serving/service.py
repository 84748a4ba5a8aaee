"""One question through `ask`'s pipeline, for a request: retrieve, build the prompt, generate
(streamed), and fill `ask`'s row with exact token counts and cost.

The pieces are `ask`'s own (generation.rows): the same prompt within the model's context
window, the same row, the same price table and tiktoken counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial

from ragbatch.asking.questions import text_id
from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.generation.prompting import PromptTooLong
from ragbatch.generation.rows import Prompted, base_row, finish_row, start_row
from ragbatch.retrieval.selection import Selection
from ragbatch.serving import gpu_memory
from ragbatch.serving.async_engine import AsyncEngine
from ragbatch.serving.live_store import Found, LiveRetriever
from ragbatch.serving.options import Prepared
from ragbatch.store.records import Hit


class BadRequest(RagbatchError):
    """A request the pipeline refuses: HTTP `status`, the body `field` it is about."""

    def __init__(self, status: int, field: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.field, self.extra = status, field, extra


@dataclass
class Pending:
    """A retrieved question with its prompt, ready to generate."""

    prompted: Prompted
    hits: list[Hit]
    version: str

    @property
    def row(self) -> dict:
        return self.prompted.row


class Service:
    """The store, the engine and the answer's settings, shared by every request."""

    def __init__(self, prepared: Prepared, metrics, notify=None):
        self.prepared, self.setup, self.metrics = prepared, prepared.setup, metrics
        engine = self.setup.engine
        # On a GPU the embedder stays resident beside vLLM: size vLLM's share by what it leaves (gpu_memory.py).
        sizing = gpu_memory.sizes_itself(self.setup.device, engine)
        warm_up = partial(gpu_memory.warm_up_and_measure, rerank=prepared.options.rerank) if sizing else None
        self.retriever = LiveRetriever(prepared.options.store, device=self.setup.device, metrics=metrics, notify=notify, warm_up=warm_up)
        try:
            if sizing:
                assert isinstance(self.retriever.warmed, gpu_memory.GpuMemory)
                engine, line = gpu_memory.serve_engine(engine, self.retriever.warmed)
                if notify:
                    notify(line)
            generation = prepared.options.generation
            self.engine = AsyncEngine(self.setup.llm_path, generation.max_model_len, self.setup.device, generation.seed or 0, engine, metrics)
        except BaseException:
            self.retriever.close()
            raise

    @property
    def llm(self) -> str:
        return self.setup.llm_name

    async def search(self, question: str, selection: Selection) -> Found:
        limit = self.prepared.options.limits.max_question_chars
        if len(question) > limit:  # before any tokenising or embedding
            raise BadRequest(413, "question", f"the question is {len(question)} characters; this server takes at most {limit}")
        if self.prepared.options.rerank:
            selection = replace(selection, rerank=self.prepared.options.rerank)
        try:
            return await self.retriever.search(question, selection)
        except ParameterError as exc:  # a field the chunks do not have, say: named as the body names it
            raise BadRequest(422, exc.param, exc.named(str)) from None
        except RagbatchError as exc:
            raise BadRequest(503, None, str(exc)) from None  # the store: a new version that cannot be read, say

    async def retrieve(self, question: str, qid: str | None, selection: Selection, max_tokens: int, system_prompt: str | None = None) -> Pending:
        window, limit = self.engine.context_window, self.prepared.options.limits.max_answer_tokens
        if max_tokens > limit:
            raise BadRequest(422, "max_tokens", f"max_tokens {max_tokens} is over this server's limit of {limit}")
        if max_tokens >= window:
            raise BadRequest(422, "max_tokens", f"max_tokens {max_tokens} leaves no room for a prompt in the {window}-token context window")
        found = await self.search(question, selection)
        row = base_row({"id": qid or text_id(question), "question": question}, found.hits, self.llm, found.embedder)
        try:
            prompted = start_row(self.setup, self.engine.tokenizer, window, row, found.hits, max_tokens, system_prompt)
        except PromptTooLong as exc:
            raise BadRequest(413, "question", f"prompt too long: {exc}", prompt_tokens=exc.tokens, budget=exc.budget, context_window=window) from None
        return Pending(prompted, found.hits, found.version)

    async def answer(
        self, pending: Pending, max_tokens: int, temperature: float, seed: int | None, ignore_eos: bool = False
    ) -> AsyncIterator[tuple[str, dict | None]]:
        """Yield (new text, None) while generating, then ("", the finished row)."""
        async for delta, generation in self.engine.generate(pending.prompted.prompt_ids, max_tokens, temperature, seed, ignore_eos):
            if generation is None:
                yield delta, None
                continue
            row = finish_row(self.setup, pending.prompted, generation)
            self.metrics.prompt_tokens.inc(generation.prompt_tokens)
            self.metrics.completion_tokens.inc(generation.completion_tokens)
            yield delta, row

    def close(self) -> None:
        self.engine.shutdown()
        self.retriever.close()
