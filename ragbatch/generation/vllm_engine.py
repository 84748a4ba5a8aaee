"""vLLM, configured: the one rule by which `ask`'s batch engine and `serve`'s AsyncLLM run
a model (device, dtype, KV cache, eager mode), the user's own engine arguments (checked
against vLLM's `EngineArgs` before any model loads, so a typo fails in seconds), the
sampling of every answer, and what a finished request returns.

vLLM is imported inside the functions that need it: importing it takes seconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ragbatch.errors import ParameterError
from ragbatch.models.devices import pick_device

# CPU: KV cache room for this many full-length sequences (short prompts pack many more).
CPU_KV_CACHE_SEQUENCES = 4
CPU_KV_CACHE_MIN_BYTES = 256 * 2**20


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    token_ids: list[int] | None = None  # the generated tokens
    logprobs: list | None = None  # per generated token, {token id: Logprob}, where asked for


def engine_arguments(model_path: str, max_model_len: int | None, device: str, seed: int, engine: dict | None, in_process: bool) -> tuple[str, dict]:
    """(device, vLLM engine arguments) for `model_path`: one rule for `ask`'s LLM and `serve`'s AsyncLLM,
    so both run the same model the same way (dtype, KV cache, eager mode) and give the same answers.

    `in_process`: on a CPU, run the engine core in this process (the batch `LLM` does: the
    multiprocess one reserves a core for its scheduler process, half of a 2-core machine, and
    loads a second Python runtime). vLLM's AsyncLLM always runs its core in a process of its own.
    """
    quiet_vllm()
    picked = pick_device(device)
    if picked == "cpu" and in_process:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    from vllm.platforms import current_platform

    vllm_device = "cpu" if current_platform.is_cpu() else "cuda"
    if vllm_device != picked:
        raise ParameterError(
            "device", device, f"the installed vLLM build runs on {vllm_device}; install ragbatch[{picked.replace('cuda', 'gpu')}] in its own environment"
        )
    settings = dict(model=model_path, max_model_len=max_model_len, seed=seed, use_tqdm_on_load=False)
    if picked == "cpu":
        dtype = cpu_dtype()
        settings.update(
            enforce_eager=True,  # torch.compile would add ~100 s to the first load
            dtype=dtype,
            kv_cache_memory_bytes=cpu_kv_cache_bytes(model_path, max_model_len, dtype),
        )
    settings.update(engine or {})
    return picked, settings


def json_output_engine(engine: dict) -> dict:
    """Engine arguments for schema-bound JSON output (the judge's verdicts, synth's pairs):
    no free whitespace between fields, where a small model can loop until max_tokens.
    vLLM 0.32 reads this per engine, not per request; the user's own setting wins."""
    return {"structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}, **engine}


def load_tokenizer(model_path: str):
    """The model's own tokenizer: prompts are built and counted with it (prompting.py)."""
    import transformers
    from transformers import AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(model_path)


def sampling_params(
    max_tokens: int, temperature: float, seed: int | None, ignore_eos: bool = False, constraint: dict | None = None, logprobs: int | None = None
):
    """The sampling of every answer; `ignore_eos` (serve's benchmark and tests) makes answers run to max_tokens.

    `constraint`: vLLM structured outputs, e.g. {"json": schema} or {"regex": pattern} (the
    judge's verdicts); `logprobs`: the top alternatives of each generated token."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    structured = StructuredOutputsParams(**constraint) if constraint else None
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed, ignore_eos=ignore_eos, structured_outputs=structured, logprobs=logprobs)


def generation_of(out) -> Generation:
    """A finished vLLM RequestOutput as a Generation with exact token counts."""
    completion = out.outputs[0]
    return Generation(
        text=completion.text,
        prompt_tokens=len(out.prompt_token_ids),
        completion_tokens=len(completion.token_ids),  # includes the stop token, if any
        finish_reason=completion.finish_reason or "stop",
        token_ids=list(completion.token_ids),
        logprobs=completion.logprobs,
    )


def tokens_prompts(prompts: list[list[int]]) -> list:
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
    os.environ.setdefault("TORCH_LOGS", "-torch")  # "Triton not available" (Triton is left out on CPU)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


def cpu_dtype() -> str:
    """bf16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32.

    On an AVX2-only CPU, oneDNN has no bf16 matmul and vLLM falls back to torch's slow
    path: SmolLM2 prefilled ~6x and decoded ~3x slower than in float32 (2-core AMD EPYC).
    """
    import torch

    def supported(probe: str) -> bool:
        return bool(getattr(torch.cpu, probe, lambda: False)())

    native = supported("_is_avx512_bf16_supported") or supported("_is_amx_tile_supported")
    return "bfloat16" if native else "float32"


def cpu_kv_cache_bytes(model_path: str, max_model_len: int | None, dtype: str) -> int:
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


# Engine arguments ragbatch sets from its own parameters.
OWN_PARAMETERS = {"model": "llm", "tokenizer": "llm", "seed": "seed", "max_model_len": "max_model_len"}


def parse_vllm_args(pairs: list[str] | tuple[str, ...]) -> dict:
    """KEY=VALUE pairs (`--vllm-arg`) as a dict; VALUE is read as JSON (true, 8, 0.5, "fp8") where it
    parses, else kept as text (fp8, awq)."""
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParameterError("vllm_arg", pair, "expected KEY=VALUE, e.g. enable_prefix_caching=true")
        try:
            settings[key] = json.loads(text)
        except ValueError:
            settings[key] = text
    return settings


def requested_engine(gpu_memory_utilization: float | None, tensor_parallel_size: int | None, vllm_args: dict) -> dict:
    """Every engine argument the user gave, as given; the dedicated options win."""
    settings = dict(vllm_args)
    if gpu_memory_utilization is not None:
        settings["gpu_memory_utilization"] = gpu_memory_utilization
    if tensor_parallel_size is not None:
        settings["tensor_parallel_size"] = tensor_parallel_size
    return settings


def engine_settings(gpu_memory_utilization: float | None, tensor_parallel_size: int | None, vllm_args: dict) -> dict:
    """requested_engine(), checked against vLLM's EngineArgs (which imports vLLM: seconds)."""
    settings = requested_engine(gpu_memory_utilization, tensor_parallel_size, vllm_args)
    if settings:
        check_engine_args(settings)
    return settings


def check_engine_args(settings: dict) -> None:
    quiet_vllm()
    from vllm.engine.arg_utils import EngineArgs

    fields = {f.name: f for f in dataclasses.fields(EngineArgs)}
    for key, value in settings.items():
        if key in OWN_PARAMETERS:
            raise ParameterError("vllm_arg", key, f"ragbatch sets it; use {{{OWN_PARAMETERS[key]}}}", refers=(OWN_PARAMETERS[key],))
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ParameterError("vllm_arg", key, f"not a vLLM engine argument{hint}")
        default = fields[key].default
        if isinstance(default, (bool, int, float)) and not _fits(value, type(default)):
            raise ParameterError("vllm_arg", f"{key}={json.dumps(value)}", f"expected a {type(default).__name__}, like its default {default!r}")
    utilization = settings.get("gpu_memory_utilization")
    if utilization is not None and not 0 < utilization <= 1:
        raise ParameterError("gpu_memory_utilization", utilization, "a share of the GPU's memory, above 0 and at most 1")
    parallel = settings.get("tensor_parallel_size")
    if parallel is not None and parallel < 1:
        raise ParameterError("tensor_parallel_size", parallel, "at least 1")


def _fits(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)
