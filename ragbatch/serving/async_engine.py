"""One vLLM engine for every request of a server, through vLLM's async API (AsyncLLM).

Each request is its own `generate` stream; the engine schedules all streams it holds in
one running batch at every step (continuous batching), so twenty simultaneous questions
decode together, and one that arrives mid-batch joins at the next step.

The engine is configured by `generation.vllm_engine.engine_arguments`, the rule `ask`'s batch engine
uses, and prompts go in as the same token ids, so one question gets the same answer
through `ask` and through `serve`. vLLM 0.32's AsyncLLM always runs its engine core in a
child process (on a CPU too); this process keeps retrieval, tokenising and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from ragbatch.generation.vllm_engine import Generation, engine_arguments, generation_of, load_tokenizer, sampling_params


def async_llm_arguments(settings: dict, metrics) -> dict:
    """AsyncLLM.from_engine_args's arguments. The usage context is vLLM's API server's, whose
    batching defaults fit online serving (vLLM 0.32, EngineArgs.get_batch_defaults: on an
    H100 1024 running requests and 8192 tokens per step, on a 24 GB card 256 and 2048);
    from_engine_args's own default (ENGINE_CONTEXT) falls back to 128 and 2048 on any
    GPU. On a CPU both give 128 and 2048. A user's max_num_seqs or max_num_batched_tokens wins."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    # disable_log_stats: no periodic log lines; our stat logger still gets every step.
    return {
        "engine_args": AsyncEngineArgs(**settings, disable_log_stats=True),
        "usage_context": UsageContext.OPENAI_API_SERVER,
        "stat_loggers": [metrics.stat_logger_factory()],
    }


class AsyncEngine:
    """Create inside the server's event loop (vLLM starts its output task there)."""

    def __init__(self, model_path: str, max_model_len: int | None, device: str, seed: int, engine: dict | None, metrics):
        self.device, settings = engine_arguments(model_path, max_model_len, device, seed, engine, in_process=False)
        self.tokenizer = load_tokenizer(model_path)
        self.metrics = metrics
        from vllm.v1.engine.async_llm import AsyncLLM

        self._llm = AsyncLLM.from_engine_args(**async_llm_arguments(settings, metrics))
        self.context_window = self._llm.model_config.max_model_len
        self._aborting: set[asyncio.Task] = set()

    async def generate(
        self, prompt_ids: list[int], max_tokens: int, temperature: float, seed: int | None, ignore_eos: bool = False
    ) -> AsyncIterator[tuple[str, Generation | None]]:
        """Yield (new text, None) as tokens arrive, then ("", Generation) once finished.

        Closing the iterator early (a client that went away) aborts the request in the engine.
        """
        from vllm.inputs import TokensPrompt

        request_id = uuid.uuid4().hex
        params = sampling_params(max_tokens, temperature, seed, ignore_eos)
        sent, finished = 0, False
        self.metrics.in_flight.inc()
        try:
            async with contextlib.aclosing(self._llm.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params, request_id)) as outputs:
                async for out in outputs:
                    text = out.outputs[0].text
                    delta, sent = text[sent:], len(text)
                    if out.finished:
                        finished = True
                        yield delta, generation_of(out)
                    elif delta:
                        yield delta, None
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                self.metrics.aborted.inc()
                # A cancelled HTTP task cancels every await it makes, vLLM's own abort
                # included: abort again from a task of its own so the engine surely stops.
                task = asyncio.get_running_loop().create_task(self._llm.abort(request_id))
                self._aborting.add(task)
                task.add_done_callback(self._aborting.discard)
            raise
        finally:
            self.metrics.in_flight.dec()

    def unfinished(self) -> int:
        """Requests vLLM's front end still tracks (0 once every abort has reached it)."""
        return self._llm.output_processor.get_num_unfinished_requests()

    def shutdown(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.shutdown()
