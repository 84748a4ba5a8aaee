"""Batched answer generation with vLLM, on a CUDA GPU or on the CPU build of vLLM.

`Generator` loads a local Hugging Face folder (see models.resolve_llm) in vLLM once, sends
every prompt of a batch, as token ids, to one engine, and sizes that engine for the device
(KV cache, dtype); token counts come back exact from vLLM's outputs.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragbatch.errors import RagbatchError

# CPU: KV cache room for this many full-length sequences (short prompts pack many more).
CPU_KV_CACHE_SEQUENCES = 4
CPU_KV_CACHE_MIN_BYTES = 256 * 2**20


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class Generator:
    """One vLLM engine for the whole run. Use as a context manager, or call close().

    CUDA: vLLM's defaults (it takes 92 % of the GPU's memory: `ask` frees the embedder's
    first). CPU: in-process engine, eager mode, an explicit KV cache size, and bf16 only
    where the CPU has native bf16 (float32 elsewhere, see `_cpu_dtype`).
    `engine` holds the user's own engine arguments (engine_args.py); they win over ours.
    `name` is the --llm name as given (for output rows); it defaults to `model_path`.
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

    def stream(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> Iterator[tuple[int, Generation]]:
        """Yield (index in prompts, Generation) for every prompt, as each one finishes.

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
        request_ids = self._llm.enqueue(_tokens_prompts(prompts), sampling_params(max_tokens, temperature, seed), use_tqdm=False)
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


def engine_arguments(model_path: str, max_model_len: int | None, device: str, seed: int, engine: dict | None, in_process: bool) -> tuple[str, dict]:
    """(device, vLLM engine arguments) for `model_path`: one rule for `ask`'s LLM and `serve`'s AsyncLLM,
    so both run the same model the same way (dtype, KV cache, eager mode) and give the same answers.

    `in_process`: on a CPU, run the engine core in this process (the batch `LLM` does: the
    multiprocess one reserves a core for its scheduler process, half of a 2-core machine, and
    loads a second Python runtime). vLLM's AsyncLLM always runs its core in a process of its own.
    """
    from ragbatch.devices import pick_device

    quiet_vllm()
    picked = pick_device(device)
    if picked == "cpu" and in_process:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    from vllm.platforms import current_platform

    vllm_device = "cpu" if current_platform.is_cpu() else "cuda"
    if vllm_device != picked:
        raise RagbatchError(
            f"--device {device}: the installed vLLM build runs on {vllm_device}; install ragbatch[{picked.replace('cuda', 'gpu')}] in its own environment"
        )
    settings = dict(model=model_path, max_model_len=max_model_len, seed=seed, use_tqdm_on_load=False)
    if picked == "cpu":
        dtype = _cpu_dtype()
        settings.update(
            enforce_eager=True,  # torch.compile would add ~100 s to the first load
            dtype=dtype,
            kv_cache_memory_bytes=_cpu_kv_cache_bytes(model_path, max_model_len, dtype),
        )
    settings.update(engine or {})
    return picked, settings


def load_tokenizer(model_path: str):
    """The model's own tokenizer: prompts are built and counted with it (prompting.py)."""
    import transformers
    from transformers import AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(model_path)


def sampling_params(max_tokens: int, temperature: float, seed: int | None, ignore_eos: bool = False):
    """The sampling of every answer; `ignore_eos` (serve's benchmark and tests) makes answers run to max_tokens."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed, ignore_eos=ignore_eos)


def generation_of(out) -> Generation:
    """A finished vLLM RequestOutput as a Generation with exact token counts."""
    completion = out.outputs[0]
    return Generation(
        text=completion.text,
        prompt_tokens=len(out.prompt_token_ids),
        completion_tokens=len(completion.token_ids),  # includes the stop token, if any
        finish_reason=completion.finish_reason or "stop",
    )


def _tokens_prompts(prompts: list[list[int]]) -> list:
    # Token ids, not text: the tokens we counted are exactly the ones the model sees.
    from vllm.inputs import TokensPrompt

    return [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts]


def quiet_vllm() -> None:
    """Environment vLLM reads at import and engine start; a user's own setting wins."""
    # ERROR, not WARNING: on CPU vLLM warns a dozen times per load about things a
    # user cannot act on (LD_PRELOAD of tcmalloc, Triton, oneDNN fallbacks, seeds).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    # vLLM 0.32 configures its loggers only when an engine starts; until then, import-time
    # warnings (e.g. "Triton is installed, but doesn't include CPU backend") go to stderr.
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # c10's NUMA binding notice
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


def _cpu_dtype() -> str:
    """bf16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32.

    On an AVX2-only CPU, oneDNN has no bf16 matmul and vLLM falls back to torch's slow
    path: SmolLM2 prefilled ~6x and decoded ~3x slower than in float32 (2-core AMD EPYC).
    """
    import torch

    def supported(probe: str) -> bool:
        return bool(getattr(torch.cpu, probe, lambda: False)())

    native = supported("_is_avx512_bf16_supported") or supported("_is_amx_tile_supported")
    return "bfloat16" if native else "float32"


def _cpu_kv_cache_bytes(model_path: str, max_model_len: int | None, dtype: str) -> int:
    """An explicit KV cache size: vLLM's CPU default (a share of NUMA node 0's memory,
    minus what the process holds) fails beside the embedder and Chroma."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    config = config.get("text_config", config)
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    bytes_per_value = 4 if dtype == "float32" else 2
    bytes_per_token = 2 * layers * kv_heads * head_dim * bytes_per_value  # K and V
    context = max_model_len or config.get("max_position_embeddings") or 4096
    return max(CPU_KV_CACHE_MIN_BYTES, bytes_per_token * context * CPU_KV_CACHE_SEQUENCES)
