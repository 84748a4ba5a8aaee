"""The user's vLLM engine settings: `--gpu-memory-utilization`, `--tensor-parallel-size`
and any other engine argument as a repeatable `--vllm-arg KEY=VALUE` (quantization,
enable_prefix_caching, max_num_seqs, ...).

They are checked against vLLM's own `EngineArgs` before any model loads, so a typo fails
in seconds with one line, not after the retrieval of a large batch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json

from ragbatch.errors import RagbatchError

# Engine arguments ragbatch sets from its own options.
OWN_OPTIONS = {"model": "--llm", "tokenizer": "--llm", "seed": "--seed", "max_model_len": "--max-model-len"}


def parse_vllm_args(pairs: list[str] | tuple[str, ...]) -> dict:
    """KEY=VALUE pairs as a dict; VALUE is read as JSON (true, 8, 0.5, "fp8") where it
    parses, else kept as text (fp8, awq)."""
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise RagbatchError(f"--vllm-arg {pair}: expected KEY=VALUE, e.g. --vllm-arg enable_prefix_caching=true")
        try:
            settings[key] = json.loads(text)
        except ValueError:
            settings[key] = text
    return settings


def engine_settings(gpu_memory_utilization: float | None, tensor_parallel_size: int | None, vllm_args: dict) -> dict:
    """Every engine argument the user gave, checked; the dedicated options win."""
    settings = dict(vllm_args)
    if gpu_memory_utilization is not None:
        settings["gpu_memory_utilization"] = gpu_memory_utilization
    if tensor_parallel_size is not None:
        settings["tensor_parallel_size"] = tensor_parallel_size
    if settings:
        check_engine_args(settings)
    return settings


def check_engine_args(settings: dict) -> None:
    from ragbatch.generation import quiet_vllm

    quiet_vllm()
    from vllm.engine.arg_utils import EngineArgs

    fields = {f.name: f for f in dataclasses.fields(EngineArgs)}
    for key, value in settings.items():
        if key in OWN_OPTIONS:
            raise RagbatchError(f"--vllm-arg {key}: ragbatch sets it; use {OWN_OPTIONS[key]}")
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise RagbatchError(f"--vllm-arg {key}: not a vLLM engine argument{hint}")
        default = fields[key].default
        if isinstance(default, (bool, int, float)) and not _fits(value, type(default)):
            raise RagbatchError(f"--vllm-arg {key}={json.dumps(value)}: expected a {type(default).__name__}, like its default {default!r}")
    utilization = settings.get("gpu_memory_utilization")
    if utilization is not None and not 0 < utilization <= 1:
        raise RagbatchError(f"--gpu-memory-utilization {utilization}: a share of the GPU's memory, above 0 and at most 1")
    parallel = settings.get("tensor_parallel_size")
    if parallel is not None and parallel < 1:
        raise RagbatchError(f"--tensor-parallel-size {parallel}: at least 1")


def _fits(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)
