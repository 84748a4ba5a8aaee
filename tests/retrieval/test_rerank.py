"""--rerank: a cross-encoder reorders the top candidates, then k are kept. The model is a
tiny cross-encoder built here (random weights, MiniLM's vocabulary) and served by the fake
hub, so the glue is tested as a user meets it: a hub id downloaded once, then offline."""

import json
import os

import pytest
from fake_hub import FakeHub
from helpers import FACTS, ragbatch_cli

import ragbatch
from ragbatch.errors import RagbatchError

QUESTION = "Who was the president of Freedonia in 1933?"


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from ragbatch.models.embedder import resolve_embedder

    folder = tmp_path_factory.mktemp("tiny-reranker")
    tokenizer = AutoTokenizer.from_pretrained(resolve_embedder(None).path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_top_candidates_come_back_in_the_cross_encoders_order(freedonia_store, tiny_reranker):
    from sentence_transformers import CrossEncoder

    candidates = ragbatch.search(QUESTION, freedonia_store, k=len(FACTS), max_per_section=0)
    assert len(candidates) == len(FACTS)
    expected = CrossEncoder(str(tiny_reranker)).predict([(QUESTION, h.text) for h in candidates])
    order = sorted(zip(expected, [h.chunk_id for h in candidates]), key=lambda pair: -pair[0])
    hits = ragbatch.search(QUESTION, freedonia_store, k=2, max_per_section=0, rerank=str(tiny_reranker))
    assert [h.chunk_id for h in hits] == [chunk_id for _, chunk_id in order[:2]]
    assert [h.score for h in hits] == pytest.approx([float(score) for score, _ in order[:2]], abs=1e-5)


@pytest.mark.slow
def test_a_hub_reranker_is_downloaded_once_then_used_offline(freedonia_store, tiny_reranker, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "RAGBATCH_STORE"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    with FakeHub({"tester/tiny-reranker": tiny_reranker}) as hub:
        online = ragbatch_cli(
            "search", QUESTION, "--store", freedonia_store, "--k", "2", "--rerank", "tester/tiny-reranker", "--json", env={**env, "HF_ENDPOINT": hub.url}
        )
        assert online.returncode == 0, online.stderr
        assert any("tester/tiny-reranker" in request for request in hub.requests)
        offline = ragbatch_cli(
            "search", QUESTION, "--store", freedonia_store, "--k", "2", "--rerank", "tester/tiny-reranker", "--json", env={**env, "HF_HUB_OFFLINE": "1"}
        )
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["results"] == json.loads(online.stdout)["results"]
    assert len(json.loads(online.stdout)["results"]) == 2


def test_an_unknown_reranker_is_one_line_naming_the_option(freedonia_store):
    with pytest.raises(RagbatchError) as error:
        ragbatch.search(QUESTION, freedonia_store, rerank="nobody/no-such-reranker")
    assert str(error.value).startswith("rerank nobody/no-such-reranker: ") and "\n" not in str(error.value)
    result = ragbatch_cli("search", QUESTION, "--store", freedonia_store, "--rerank", "./no/such/folder")
    assert result.returncode == 1 and "--rerank ./no/such/folder: no such folder" in result.stderr
