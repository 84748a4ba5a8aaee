"""How much of the GPU `serve` lets vLLM take: what its own models leave, less a margin.

`ask` frees its embedder before vLLM starts, so vLLM's default share (0.92 of the GPU's
memory) is there for it. `serve` keeps the query embedder (and a reranker) resident in
its own process for every request, while vLLM's engine core, a child process, checks at
start that `gpu_memory_utilization x total` is still free and then fills that share with
weights, activations and KV cache (vllm/v1/worker/utils.py, request_memory). On a 24 GB
card the default leaves ~1.8 GB, less than the embedder and two CUDA contexts need.

So serve loads its models, runs one query batch of the largest shape (MAX_BATCH questions
as long as the embedder reads), and gives vLLM the share of the GPU then free, less:
- the embedder's weights once more: a hot reload opens the new version's embedder
  before it frees the old one (live_store.py);
- ENGINE_CONTEXT_BYTES: the engine core's own CUDA context, made before vLLM measures
  what is free (~0.5 GiB on an H100 with CUDA 12; doubled for other cards and drivers);
- GROWTH_BYTES: allocator blocks for batches shaped unlike the warm-up's.
A user's `--gpu-memory-utilization` (or `--vllm-arg gpu_memory_utilization=...`) wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ragbatch.errors import RagbatchError
from ragbatch.retrieval.selection import Selection
from ragbatch.serving.live_store import MAX_BATCH

GIB = 2**30
VLLM_DEFAULT_UTILIZATION = 0.92  # EngineArgs' default, what `ask` gets: serve never asks for more
ENGINE_CONTEXT_BYTES = GIB
GROWTH_BYTES = GIB // 2
MIN_UTILIZATION = 0.05  # below this no model of use fits: say so instead of vLLM's traceback
# Longer than any embedder reads (it truncates to its max_seq_length): the warm-up batch's shape.
LONG_QUESTION = " ".join(["retrieval"] * 2048)


@dataclass(frozen=True)
class GpuMemory:
    total: int  # the device's memory, bytes
    free: int  # free on the device after the warm-up (every process's use counted)
    resident: int  # this process's torch allocator (torch.cuda.memory_reserved): the models and their cached activations
    reload: int  # one embedder's weights: held twice while a hot reload swaps versions


def sizes_itself(device: str, engine: dict) -> bool:
    """Whether serve computes the share: on a GPU, unless the user gave one."""
    return device == "cuda" and "gpu_memory_utilization" not in engine


def warm_up_and_measure(retriever, rerank: str | None) -> GpuMemory:
    """Run the largest query batch through `retriever` (embedder, and the reranker the
    server uses, which it loads), then read what the GPU has left."""
    import torch

    retriever.search([LONG_QUESTION] * MAX_BATCH, Selection(mode="dense", k=1, rerank=rerank))
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    weights = sum(p.numel() * p.element_size() for p in retriever.embedder.model.parameters())
    return GpuMemory(total=total, free=free, resident=torch.cuda.memory_reserved(), reload=weights)


def utilization_for(memory: GpuMemory) -> float:
    """The share of the GPU vLLM may ask for, rounded down to a hundredth."""
    budget = memory.free - memory.reload - ENGINE_CONTEXT_BYTES - GROWTH_BYTES
    share = math.floor(100 * budget / memory.total) / 100
    if share < MIN_UTILIZATION:
        raise RagbatchError(
            f"the GPU has {memory.free / GIB:.1f} of {memory.total / GIB:.1f} GiB free with the embedder loaded: too little for vLLM "
            "beside it; free the GPU, or set {gpu_memory_utilization}",
            refers=("gpu_memory_utilization",),
        )
    return min(VLLM_DEFAULT_UTILIZATION, share)


def serve_engine(engine: dict, memory: GpuMemory) -> tuple[dict, str]:
    """serve's engine arguments with the computed share, and one line saying it."""
    share = utilization_for(memory)
    line = (
        f"GPU memory: the server's models hold {memory.resident / GIB:.1f} GiB, {memory.free / GIB:.1f} of {memory.total / GIB:.1f} GiB are free; "
        f"vLLM gets gpu_memory_utilization {share:.2f} ({share * memory.total / GIB:.1f} GiB)"
    )
    return {**engine, "gpu_memory_utilization": share}, line
