"""serve on a GPU, checked on the CPU: vLLM's share of the GPU leaves room for the resident
embedder, a user's share wins, and AsyncLLM gets vLLM's API-server batching defaults.

The GPU is faked only where our glue reads it (torch.cuda's memory figures) and the engine
is replaced by a recorder of what serve would start it with; the embedder, the store and
the warm-up search are real. tests/models/test_gpu.py starts the real thing on a GPU."""

from dataclasses import replace

import pytest
import torch

from ragbatch.cli.errors import flag
from ragbatch.errors import RagbatchError
from ragbatch.generation.pricing import LOCAL
from ragbatch.generation.settings import GenerationInputs, GenerationOptions, GenerationSetup
from ragbatch.generation.vllm_engine import engine_settings, parse_vllm_args
from ragbatch.serving import gpu_memory, service
from ragbatch.serving.async_engine import async_llm_arguments
from ragbatch.serving.gpu_memory import ENGINE_CONTEXT_BYTES, GIB, GROWTH_BYTES, GpuMemory, serve_engine, sizes_itself, utilization_for
from ragbatch.serving.live_store import MAX_BATCH, LiveRetriever
from ragbatch.serving.metrics import Metrics
from ragbatch.serving.options import Prepared, ServeOptions

MIB = 2**20
A10G = 23028 * MIB  # what torch reports for a 24 GB card
H100 = 81559 * MIB
OWN_CONTEXT = 450 * MIB  # this process's CUDA context: on the device, not in torch's allocator
INSTRUCTOR_LARGE_BF16 = 335_000_000 * 2


def card(total: int, resident: int = GIB) -> GpuMemory:
    """A GPU with this process's CUDA context and `resident` bytes of models on it."""
    return GpuMemory(total=total, free=total - OWN_CONTEXT - resident, resident=resident, reload=INSTRUCTOR_LARGE_BF16)


def test_on_a_24_gb_card_vllm_gets_what_the_embedder_leaves_less_the_margin():
    memory = card(A10G)
    share = utilization_for(memory)
    assert share == 0.84
    held = memory.total - memory.free  # this process: context, embedder, cached activations
    assert share * memory.total + held + memory.reload + ENGINE_CONTEXT_BYTES + GROWTH_BYTES <= memory.total
    # vLLM's default would not even start: its engine sees less free than 0.92 of the card.
    assert 0.92 * memory.total > memory.free - ENGINE_CONTEXT_BYTES
    # A larger resident model (a reranker too) leaves vLLM less.
    assert utilization_for(card(A10G, resident=3 * GIB)) < share


def test_on_an_80_gb_card_vllm_keeps_its_default_share():
    assert utilization_for(card(H100)) == 0.92


def test_a_gpu_too_full_for_vllm_is_one_line_naming_the_option():
    with pytest.raises(RagbatchError) as error:
        utilization_for(card(4 * GIB, resident=2 * GIB))
    assert error.value.named(flag).endswith("free the GPU, or set --gpu-memory-utilization")


def test_the_users_share_wins_and_nothing_is_measured():
    assert sizes_itself("cuda", {}) and sizes_itself("cuda", {"max_num_seqs": 64})
    assert not sizes_itself("cpu", {})
    assert not sizes_itself("cuda", engine_settings(0.5, None, {}))  # --gpu-memory-utilization 0.5
    assert not sizes_itself("cuda", engine_settings(None, None, parse_vllm_args(["gpu_memory_utilization=0.6"])))  # --vllm-arg
    engine, line = serve_engine({"max_num_seqs": 64}, card(A10G))
    assert engine == {"max_num_seqs": 64, "gpu_memory_utilization": 0.84}
    assert "vLLM gets gpu_memory_utilization 0.84" in line


@pytest.fixture
def fake_gpu_memory(monkeypatch):
    """torch.cuda's memory figures as a 24 GB card with the embedder on it would give them."""
    memory = card(A10G)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *device: (memory.free, memory.total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *device: memory.resident)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *device: None)
    return memory


def test_the_warm_up_runs_the_largest_query_batch_and_measures_after_it(freedonia_store, fake_gpu_memory, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGBATCH_CACHE", str(tmp_path / "cache"))
    live = LiveRetriever(freedonia_store, device="cpu", warm_up=lambda r: gpu_memory.warm_up_and_measure(r, rerank=None))
    try:
        embedder = live._retriever.embedder
        assert embedder.vectors == MAX_BATCH  # one batch of the most questions the worker takes at once
        measured = live.warmed
        assert (measured.total, measured.free, measured.resident) == (fake_gpu_memory.total, fake_gpu_memory.free, fake_gpu_memory.resident)
        assert 80e6 < measured.reload < 100e6  # MiniLM-L6's 22.7M float32 parameters: a reload's second copy
    finally:
        live.close()


class RecordedEngine:
    """Stands in for AsyncEngine: what serve would start vLLM with."""

    started: list[dict] = []

    def __init__(self, model_path, max_model_len, device, seed, engine, metrics):
        RecordedEngine.started.append({"device": device, "engine": engine})

    def shutdown(self):
        pass


def serve_setup(store, engine: dict) -> Prepared:
    options = GenerationOptions(llm="recorded")
    setup = GenerationSetup(options, GenerationInputs("", None, None), "recorded", "unused", "cuda", engine, LOCAL)
    return Prepared(ServeOptions(store=store, generation=options), setup)


@pytest.mark.parametrize("users", [None, 0.6])
def test_serve_starts_vllm_with_the_share_its_embedder_leaves_unless_the_user_gave_one(users, freedonia_store, fake_gpu_memory, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGBATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(service, "AsyncEngine", RecordedEngine)
    # The setup says cuda; the real embedder runs on this machine's CPU.
    monkeypatch.setattr(service, "LiveRetriever", lambda store, device, **kw: LiveRetriever(store, device="cpu", **kw))
    RecordedEngine.started.clear()
    user = {} if users is None else engine_settings(users, None, {})
    lines: list[str] = []
    running = service.Service(serve_setup(freedonia_store, {"max_num_seqs": 32, **user}), Metrics(), lines.append)
    try:
        [started] = RecordedEngine.started
        assert started["device"] == "cuda"
        if users is None:
            assert running.retriever.warmed == replace(fake_gpu_memory, reload=running.retriever.warmed.reload)
            assert started["engine"] == {"max_num_seqs": 32, "gpu_memory_utilization": utilization_for(running.retriever.warmed)}
            assert started["engine"]["gpu_memory_utilization"] < 0.92
            assert any("vLLM gets gpu_memory_utilization" in line for line in lines)
        else:
            assert running.retriever.warmed is None  # no warm-up, no measuring
            assert started["engine"] == {"max_num_seqs": 32, "gpu_memory_utilization": users}
            assert lines == []
    finally:
        running.close()


def test_asyncllm_gets_the_api_servers_usage_context(tmp_path):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    arguments = async_llm_arguments({"model": str(tmp_path), "gpu_memory_utilization": 0.84}, Metrics())
    assert arguments["usage_context"] is UsageContext.OPENAI_API_SERVER
    assert arguments["engine_args"].gpu_memory_utilization == 0.84 and arguments["engine_args"].disable_log_stats
    assert arguments["engine_args"].max_num_seqs is None  # left to vLLM's defaults for that context
    tokens, seqs = EngineArgs.get_batch_defaults(world_size=1)
    assert UsageContext.OPENAI_API_SERVER in tokens and UsageContext.OPENAI_API_SERVER in seqs
