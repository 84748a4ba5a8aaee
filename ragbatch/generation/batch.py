"""Batched answer generation with vLLM, on a CUDA GPU or on the CPU build of vLLM.

`Generator` loads a local Hugging Face folder (see models.weights.resolve_llm) in vLLM
once, sends every prompt of a batch, as token ids, to one engine sized for the device
(vllm_engine.engine_arguments); token counts come back exact from vLLM's outputs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence

from ragbatch.generation.settings import GenerationSetup
from ragbatch.generation.vllm_engine import Generation, engine_arguments, generation_of, json_output_engine, load_tokenizer, sampling_params, tokens_prompts


class Generator:
    """One vLLM engine for the whole run. Use as a context manager, or call close().

    CUDA: vLLM's defaults (it takes 92 % of the GPU's memory: `ask` frees the embedder's
    first). CPU: in-process engine, eager mode, an explicit KV cache size, and bf16 only
    where the CPU has native bf16 (float32 elsewhere, see vllm_engine.cpu_dtype).
    `engine` holds the user's own engine arguments (vllm_engine.py); they win over ours.
    `name` is the LLM's name as given (for output rows); it defaults to `model_path`.
    """

    def __init__(
        self,
        model_path: str,
        max_model_len: int | None = None,
        device: str = "auto",
        seed: int = 0,
        name: str | None = None,
        engine: dict | None = None,
    ):
        self.name = name or model_path
        self.device, settings = engine_arguments(model_path, max_model_len, device, seed, engine, in_process=True)
        self.tokenizer = load_tokenizer(model_path)

        from vllm import LLM

        started = time.perf_counter()
        self._llm = LLM(**settings)
        self.load_seconds = time.perf_counter() - started
        self.context_window = self._llm.llm_engine.model_config.max_model_len

    @classmethod
    def for_setup(cls, setup: GenerationSetup, json_output: bool = False) -> Generator:
        """The engine a prepared setup describes (ask, judge, synth); `json_output` for
        schema-bound JSON (judge's verdicts, synth's pairs: vllm_engine.json_output_engine)."""
        return cls(
            setup.llm_path,
            max_model_len=setup.options.max_model_len,
            device=setup.device,
            seed=setup.options.seed or 0,
            name=setup.llm_name,
            engine=json_output_engine(setup.engine) if json_output else setup.engine,
        )

    def stream(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        temperature: float,
        seed: int | None,
        constraints: Sequence[dict | None] | None = None,
        logprobs: int | None = None,
    ) -> Iterator[tuple[int, Generation]]:
        """Yield (index in prompts, Generation) for every prompt, as each one finishes.

        `constraints` (one per prompt): structured outputs for each (see sampling_params).

        Every prompt is queued before the engine's first step, so vLLM batches them all as
        one `LLM.generate` call would; the caller writes rows and shows progress while the
        rest run. Stopping the iteration early aborts the unfinished requests.

        Why not a public vLLM API: `LLM.generate` and `enqueue` + `wait_for_completion`
        return only when every request has finished (their `use_tqdm` callback sees counts,
        not outputs), and calling them over slices would lose batching across slices. So
        this steps `llm_engine` as `LLM._run_engine` does (vLLM 0.32), and the ask benchmark
        checks it against a bare `LLM.generate` (ratio <= 1.1).
        """
        if not prompts:
            return
        self._check_lengths(prompts)
        if constraints is None:
            params = sampling_params(max_tokens, temperature, seed, logprobs=logprobs)
        else:
            params = [sampling_params(max_tokens, temperature, seed, constraint=c, logprobs=logprobs) for c in constraints]
        request_ids = self._llm.enqueue(tokens_prompts(prompts), params, use_tqdm=False)
        position = {}
        for index, request_id in enumerate(request_ids):
            # enqueue returns vLLM's internal ids ("<ours>-<8 random chars>"); outputs carry ours.
            position[request_id] = position[request_id.rsplit("-", 1)[0]] = index
        unfinished = dict(enumerate(request_ids))
        engine = self._llm.llm_engine
        try:
            while unfinished and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        index = position[out.request_id]
                        del unfinished[index]
                        yield index, generation_of(out)
            if unfinished:
                raise RuntimeError(f"vLLM dropped {len(unfinished)} requests without output")
        finally:
            if unfinished:
                engine.abort_request(list(unfinished.values()), internal=True)

    def _check_lengths(self, prompts: list[list[int]]) -> None:
        longest = max(len(ids) for ids in prompts)
        if longest >= self.context_window:
            raise ValueError(f"a prompt of {longest} tokens leaves no room to answer in the {self.context_window}-token context window")

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
        gc.collect()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
