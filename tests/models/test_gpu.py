"""On a CUDA GPU (`pytest -m gpu`; skipped where torch sees none, and failed instead under
RAGBATCH_EXPECT_GPU=1, so a GPU box whose torch cannot see the driver is not green): the
numerics of an instructor-large-shaped encoder in bf16/fp16, the device rule, the embedder
giving its GPU memory back, and a Ray-free `index` + `search` on CUDA."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import ROOT

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def a_gpu():
    # Module-scoped: it runs before the module's other fixtures, which would load models on CUDA.
    if torch.cuda.is_available():
        return
    if os.environ.get("RAGBATCH_EXPECT_GPU") == "1":
        pytest.fail(
            f"RAGBATCH_EXPECT_GPU=1, but torch {torch.__version__} sees no CUDA GPU (built for CUDA {torch.version.cuda}; check the driver and CUDA_VISIBLE_DEVICES)"
        )
    pytest.skip("needs a CUDA GPU")


@pytest.fixture(scope="module")
def instructor_shaped(tmp_path_factory):
    """Full-size: T5-large's 24 layers, random weights (no download on device machines)."""
    from benchmarks.encoder_shapes import instructor_large_shaped
    from ragbatch.models.embedder import INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY, EmbedderSpec

    folder = instructor_large_shaped(tmp_path_factory.mktemp("instructor-large-shaped") / "st")
    return EmbedderSpec("instructor-large-shaped", str(folder), "local", INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY)


def around_paragraphs(n: int) -> list[str]:

    text = (ROOT / "corpora" / "around.txt").read_text(encoding="utf-8-sig")
    return [line for line in text.splitlines() if len(line) > 200][:n]


def test_device_rule_on_a_gpu():
    from ragbatch.models.devices import model_dtype, pick_device

    assert pick_device("auto") == "cuda" and pick_device("cuda") == "cuda" and pick_device("cpu") == "cpu"
    assert model_dtype("cuda") == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")


def test_half_precision_vectors_match_float32(instructor_shaped):
    from sentence_transformers import SentenceTransformer

    from ragbatch.models.embedder import Embedder

    texts = around_paragraphs(64)
    reference = SentenceTransformer(instructor_shaped.path, device="cuda")  # float32
    # INSTRUCTOR's pooling, as the Embedder's: the instruction's tokens out of the mean
    # (loaded from a folder, sentence-transformers would keep them in).
    reference.set_pooling_include_prompt(False)
    full = reference.encode(texts, prompt=instructor_shaped.document_instruction, normalize_embeddings=True, convert_to_numpy=True)
    del reference
    embedder = Embedder(instructor_shaped, device="cuda")
    assert embedder.dtype in ("bfloat16", "float16")
    vectors = embedder.embed_documents(texts)
    assert vectors.dtype == np.float32
    assert float((vectors * full).sum(axis=1).min()) >= 0.999


def test_the_embedder_gives_its_gpu_memory_back(instructor_shaped):
    from ragbatch.models.embedder import Embedder

    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    embedder = Embedder(instructor_shaped, device="cuda")
    embedder.embed_documents(around_paragraphs(32))
    assert torch.cuda.memory_reserved() > before + 500 * 2**20  # ~670 MB of bf16 weights
    embedder.release()
    assert torch.cuda.memory_reserved() <= before + 64 * 2**20


def test_index_and_search_on_cuda_without_ray(tmp_path, instructor_shaped):
    from ragbatch.cli import main

    (tmp_path / "around.txt").write_text("\n".join(around_paragraphs(40)) + "\n")
    store = tmp_path / "store"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "index",
            str(tmp_path / "around.txt"),
            "--store",
            str(store),
            "--embedder",
            instructor_shaped.path,
            "--device",
            "cuda",
            "--executor",
            "local",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["embedded"] == report["chunks"] > 0
    found = runner.invoke(main, ["search", "Phileas Fogg", "--store", str(store), "--device", "cuda", "--retrieval", "dense", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["results"]) == 5


# --- ask, serve and index --executor ray on CUDA: the packaged SmolLM2 under vLLM's CUDA build ---

MIB = 2**20


@pytest.fixture(scope="module")
def gpu_store(tmp_path_factory, instructor_shaped):
    """The Freedonia facts, one chunk each, embedded on the GPU by the instructor-large-shaped
    encoder (~670 MB of bf16 weights: a clear mark in torch's memory figures). With k=4 every
    fact is in every prompt, so answers do not depend on the random encoder's ranking."""
    from helpers import FACTS

    import ragbatch

    folder = tmp_path_factory.mktemp("freedonia-gpu")
    (folder / "freedonia.txt").write_text("\n".join(FACTS) + "\n")
    store = folder / "store"
    ragbatch.index([folder / "freedonia.txt"], store=store, embedder=instructor_shaped.path, device="cuda", executor="local", chunk_size=24, chunk_overlap=0)
    return store


@pytest.fixture(scope="module")
def asked(gpu_store, tmp_path_factory):
    """One `ask` on CUDA, with torch's memory figures read as vLLM is about to start (after
    retrieval, where the batch engine sizes itself by what is free)."""
    import gc

    import pyarrow.parquet as pq

    import ragbatch
    from ragbatch.generation.batch import Generator

    gc.collect()  # what earlier tests left in this process's allocator
    torch.cuda.empty_cache()
    start = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}
    torch.cuda.reset_peak_memory_stats()
    at_vllm: dict = {}
    for_setup = Generator.for_setup

    def spy(setup, json_output=False):
        at_vllm.update(allocated=torch.cuda.memory_allocated(), reserved=torch.cuda.memory_reserved(), peak=torch.cuda.max_memory_allocated())
        return for_setup(setup, json_output)

    out = tmp_path_factory.mktemp("asked") / "answers.parquet"
    questions = ["What is the capital of Freedonia?", "Who was the president of Freedonia in 1933?", "What is Freedonia's national dish?"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Generator, "for_setup", spy)
        report = ragbatch.ask(questions, store=gpu_store, out=out, k=4, llm="smollm2-135m-instruct", max_tokens=16, max_model_len=2048, device="cuda")
    return {"report": report, "table": pq.read_table(out), "start": start, "at_vllm": at_vllm}


def test_ask_on_cuda_answers_with_exact_token_counts(asked, gpu_store):
    from transformers import AutoTokenizer

    import ragbatch
    from ragbatch.asking.answer_file import RUN_METADATA
    from ragbatch.generation.prompting import build_prompt
    from ragbatch.models.weights import resolve_llm

    report, table = asked["report"], asked["table"]
    assert (report.answered, report.failed) == (3, 0)
    assert json.loads(table.schema.metadata[RUN_METADATA])["device"] == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(resolve_llm(None))
    with ragbatch.open_store(gpu_store) as store:
        texts = {chunk_id: text for chunk_id, text, _ in store.vectors.get(sorted({i for row in table.to_pylist() for i in row["chunk_ids"]}))}
    for row in table.to_pylist():
        assert row["error"] is None and row["answer"].strip() and row["finish_reason"] in ("stop", "length")
        assert len(row["chunk_ids"]) == 4
        # Exact: the prompt vLLM got is the one build_prompt renders for the retrieved passages.
        prompt = build_prompt(tokenizer, row["question"], [texts[i] for i in row["chunk_ids"]], 2048, 16)
        assert row["prompt_tokens"] == len(prompt.token_ids)
        assert 0 < row["completion_tokens"] <= 16
    assert report.prompt_tokens == sum(table.column("prompt_tokens").to_pylist())


def test_ask_frees_the_embedders_gpu_memory_before_vllm_starts(asked):
    start, at_vllm = asked["start"], asked["at_vllm"]
    assert at_vllm, "ask did not start vLLM through Generator.for_setup"
    assert at_vllm["peak"] >= start["allocated"] + 500 * MIB  # the embedder was on the GPU for retrieval
    # ... and gone when vLLM measures what is free, its cached blocks too (empty_cache). The
    # slack is for cuBLAS workspaces (up to 32 MiB per stream on Hopper), not a 670 MB model.
    assert at_vllm["allocated"] <= start["allocated"] + 64 * MIB
    assert at_vllm["reserved"] <= start["reserved"] + 128 * MIB


def test_serve_starts_beside_its_resident_embedder_with_the_computed_share(gpu_store):
    """A ballast tensor leaves ~22 GiB free, as on a 24 GB card, where vLLM's default share
    could not start beside the embedder; serve's computed one must."""
    import asyncio

    from vllm.config import SchedulerConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    from ragbatch.generation.settings import GenerationOptions
    from ragbatch.retrieval.selection import Selection
    from ragbatch.serving.gpu_memory import utilization_for
    from ragbatch.serving.metrics import Metrics
    from ragbatch.serving.options import ServeOptions, prepare
    from ragbatch.serving.service import Service

    free, total = torch.cuda.mem_get_info()
    ballast = torch.empty(max(0, free - 22 * 2**30), dtype=torch.uint8, device="cuda")
    prepared = prepare(ServeOptions(store=gpu_store, generation=GenerationOptions(llm="smollm2-135m-instruct", device="cuda", max_model_len=2048)))
    lines: list = []
    base = torch.cuda.memory_allocated()  # the ballast, and whatever earlier tests left

    async def start_and_answer():
        running = Service(prepared, Metrics(), lines.append)
        try:
            embedder = running.retriever._retriever.embedder
            held = torch.cuda.memory_allocated() - base
            pending = await running.retrieve("What is the capital of Freedonia?", None, Selection(k=4), 8)
            rows = [row async for _, row in running.answer(pending, 8, 0.0, None) if row is not None]
            return running.retriever.warmed, running.engine._llm.vllm_config, embedder.device, held, rows
        finally:
            running.close()

    try:
        memory, config, device, held, rows = asyncio.run(start_and_answer())
    finally:
        del ballast
        torch.cuda.empty_cache()
    assert device == "cuda" and held >= 500 * MIB  # the embedder stayed resident while vLLM ran
    share = config.cache_config.gpu_memory_utilization
    assert share == utilization_for(memory) and any(f"gpu_memory_utilization {share:.2f}" in str(line) for line in lines)
    if memory.total > 30 * 2**30:  # the ballast made it a 24 GB card: the default would not have fitted
        assert 0.92 * memory.total > memory.free
    assert rows[0]["error"] is None and 0 < rows[0]["completion_tokens"] <= 8
    # vLLM's API-server batching defaults for this GPU, not its engine-context fallback.
    tokens, seqs = EngineArgs.get_batch_defaults(world_size=1)
    assert config.scheduler_config.max_num_seqs == seqs[UsageContext.OPENAI_API_SERVER] > SchedulerConfig.DEFAULT_MAX_NUM_SEQS
    assert config.scheduler_config.max_num_batched_tokens == tokens[UsageContext.OPENAI_API_SERVER]


def test_index_on_ray_gives_each_embedding_actor_half_a_gpu(tmp_path):
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    import ragbatch
    from ragbatch.ingest.ray_executor import gpu_pool

    def embed_actors() -> dict:
        """Ray Data's embedding actors in the GCS actor table (dead ones stay listed), by id."""
        if not ray.is_initialized():
            return {}
        table = (gcs_pb2.ActorTableData.FromString(raw) for raw in state._connect_and_get_accessor().get_actor_table(None, None))
        return {a.actor_id: dict(a.required_resources) for a in table if "_EmbedActor" in a.class_name}

    before = embed_actors()
    (tmp_path / "around.txt").write_text("\n".join(around_paragraphs(200)) + "\n")
    try:
        report = ragbatch.index([tmp_path / "around.txt"], store=tmp_path / "store", embedder="all-MiniLM-L6-v2", device="cuda", executor="ray")
        assert report.embedded == report.chunks > 0  # every actor found its GPU share (pick_device("cuda") fails without one)
        ours = [resources for actor_id, resources in embed_actors().items() if actor_id not in before]
    finally:
        ray.shutdown()
    size, share = gpu_pool(torch.cuda.device_count())
    assert (size, share) == (2 * torch.cuda.device_count(), 0.5)
    assert len(ours) == size and all(resources["GPU"] == share and resources["CPU"] == 1 for resources in ours)
