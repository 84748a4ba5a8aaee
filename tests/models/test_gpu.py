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


@pytest.fixture(autouse=True)
def a_gpu():
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
