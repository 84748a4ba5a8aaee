"""Batched answer generation with vLLM, on a CUDA GPU or on the CPU build of vLLM.

`Generator` loads a local Hugging Face folder (see models.weights.resolve_llm) in vLLM
once, sends every prompt of a batch, as token ids, to one engine sized for the device
(vllm_engine.engine_arguments); token counts come back exact from vLLM's outputs.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

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
        prompts: Iterable[list[int]],
        max_tokens: int,
        temperature: float,
        seed: int | None,
        constraints: Sequence[dict | None] | None = None,
        logprobs: int | None = None,
    ) -> Iterator[tuple[int, Generation]]:
        """Yield (index in prompts, Generation) for every prompt, as each one finishes.

        `prompts`: a list is queued whole before the engine's first step, so vLLM batches
        them all as one `LLM.generate` call would. Any other iterable (a generator building
        prompts, as `ask` passes) is built on a thread while the engine steps, and before
        step s at least (s + 1) x max_num_seqs prompts are queued: no step can admit more
        requests than that, and vLLM admits waiting requests first come first served, so
        every step runs the batch it would run with every prompt queued at once. Answers
        are those of one `LLM.generate` (not dependent on the thread's timing), while the
        first prompts generate as the later ones are built. `constraints` (one per
        prompt, lists only): structured outputs for each (see sampling_params).

        The caller writes rows and shows progress while the rest run. Stopping the
        iteration early aborts the unfinished requests.

        Why not a public vLLM API: `LLM.generate` and `enqueue` + `wait_for_completion`
        return only when every request has finished (their `use_tqdm` callback sees counts,
        not outputs), and calling them over slices would lose batching across slices. So
        this steps `llm_engine` as `LLM._run_engine` does (vLLM 0.32), and the ask benchmark
        checks it against a bare `LLM.generate`.
        """
        if constraints is None:
            same = sampling_params(max_tokens, temperature, seed, logprobs=logprobs)
        else:
            each = [sampling_params(max_tokens, temperature, seed, constraint=c, logprobs=logprobs) for c in constraints]
        feed = _Feed(prompts) if not isinstance(prompts, Sequence) else None
        if feed is None and not prompts:
            return
        position: dict[str, int] = {}
        unfinished: dict[int, str] = {}
        added = 0

        def add(batch: list[list[int]]) -> None:
            nonlocal added
            self._check_lengths(batch)
            params = same if constraints is None else each[added : added + len(batch)]
            request_ids = self._llm.enqueue(tokens_prompts(batch), params, use_tqdm=False)
            for index, request_id in enumerate(request_ids, start=added):
                # enqueue returns vLLM's internal ids ("<ours>-<8 random chars>"); outputs carry ours.
                position[request_id] = position[request_id.rsplit("-", 1)[0]] = index
                unfinished[index] = request_id
            added += len(batch)

        engine = self._llm.llm_engine
        per_step = engine.vllm_config.scheduler_config.max_num_seqs  # the most requests one step admits
        steps = 0
        try:
            if feed is None:
                add(list(prompts))
            while True:
                if feed is not None and not feed.done:
                    # enough for the coming step (see above), and one at least where the engine would idle
                    batch = feed.take(at_least=max(per_step * (steps + 1) - added, 0 if unfinished else 1))
                    if batch:
                        add(batch)
                if not unfinished:
                    if feed is None or feed.done:
                        break
                    continue
                if not engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM dropped {len(unfinished)} requests without output")
                steps += 1
                for out in engine.step():
                    if out.finished:
                        index = position[out.request_id]
                        del unfinished[index]
                        yield index, generation_of(out)
        finally:
            if feed is not None:
                feed.stop()
            if unfinished:
                engine.abort_request(list(unfinished.values()), internal=True)

    def _check_lengths(self, prompts: list[list[int]]) -> None:
        if not prompts:
            return
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


class _Feed:
    """Prompts taken from a lazy iterable on a thread of their own (building a prompt is
    tokenizer work that releases the GIL), handed to the engine loop as they are ready.
    An exception raised while building is raised again in the engine loop."""

    _END = object()

    def __init__(self, prompts: Iterable[list[int]]):
        self._queue: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self.done = False
        self._thread = threading.Thread(target=self._build, args=(iter(prompts),), name="ragbatch-prompts", daemon=True)
        self._thread.start()

    def _build(self, prompts: Iterator[list[int]]) -> None:
        try:
            for ids in prompts:
                if self._stopping.is_set():
                    return
                self._queue.put(ids)
        except BaseException as exc:  # noqa: BLE001 - handed to the engine loop
            self._queue.put(exc)
        finally:
            self._queue.put(self._END)

    def take(self, at_least: int) -> list[list[int]]:
        """Every prompt built so far, waiting until there are `at_least` (or the end)."""
        batch: list[list[int]] = []
        while not self.done:
            try:
                item = self._queue.get(block=len(batch) < at_least)
            except queue.Empty:
                break
            if item is self._END:
                self.done = True
            elif isinstance(item, BaseException):
                self.done = True
                raise item
            else:
                batch.append(item)
        return batch

    def stop(self) -> None:
        self._stopping.set()
