"""The Embedder's own encode loop (models/encoding.py) against sentence-transformers'
encode: the same vectors for MiniLM and an instructor-shaped T5 (prompt excluded from
the mean), batches by tokens, tokenizing on its own thread, pooling with no host read."""

import threading

import numpy as np
import pytest
import torch

from ragbatch.models.embedder import Embedder, EmbedderSpec, resolve_embedder
from ragbatch.models.encoding import mean_pool, plan_batches

INSTRUCTION = "Represent the document for retrieval:"
TEXTS = [
    "  Phileas Fogg bet twenty thousand pounds at the Reform Club. ",
    "Passepartout lost his shoes in Bombay, and Fogg crossed India by elephant when the railway stopped short. " * 6,
    "Rail.",
    "The Henrietta burned her own timbers to reach Liverpool.\n" * 3,
    "Aouda",
]


def reference(path: str, texts: list[str], prompt: str | None, batch_size: int = 32) -> np.ndarray:
    """sentence-transformers' own encode, prompt tokens out of the mean (INSTRUCTOR's way)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    model.set_pooling_include_prompt(False)
    return model.encode(texts, prompt=prompt, batch_size=batch_size, normalize_embeddings=True)


@pytest.fixture(scope="module")
def minilm():
    return Embedder(resolve_embedder(None), device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def instructor_spec(tmp_path_factory):
    from benchmarks.encoder_shapes import instructor_large_shaped

    folder = instructor_large_shaped(tmp_path_factory.mktemp("instructor-shaped") / "st", layers=2)
    return EmbedderSpec("instructor-shaped", str(folder), "local", INSTRUCTION, "Represent the question:")


def cosines(a, b):
    return (np.asarray(a) * np.asarray(b)).sum(axis=1)


def test_minilm_vectors_equal_encodes_own(minilm):
    assert minilm.fast is not None  # the own loop, not a fallback
    vectors = minilm.embed_documents(TEXTS)
    assert cosines(vectors, reference(minilm.spec.path, TEXTS, None)).min() >= 0.9999


def test_instructor_vectors_equal_encodes_own_with_the_prompt_left_out(instructor_spec):
    embedder = Embedder(instructor_spec, device="cpu", batch_size=2)
    assert embedder.fast is not None
    vectors = embedder.embed_documents(TEXTS)
    stripped = [t.strip() for t in TEXTS]  # INSTRUCTOR strips; sentence-transformers does not
    assert cosines(vectors, reference(instructor_spec.path, stripped, INSTRUCTION)).min() >= 0.9999
    # Guard: with the instruction's tokens in the mean the vectors differ, so the check can fail.
    from sentence_transformers import SentenceTransformer

    leaky = SentenceTransformer(instructor_spec.path, device="cpu").encode(stripped, prompt=INSTRUCTION, normalize_embeddings=True)
    assert cosines(vectors, leaky).min() < 0.9999


def test_token_budget_batches_give_the_same_vectors(minilm):
    """Budgets that split the texts differently (one text a batch, a few, all in one):
    the same vectors."""
    expected = minilm.embed_documents(TEXTS)
    for budget in (16, 64, 100_000):
        vectors = minilm.fast.encode(TEXTS, None, max_tokens=budget)
        vectors = torch.nn.functional.normalize(vectors.float(), dim=-1).numpy()
        assert cosines(vectors, expected).min() >= 0.9999


def test_plan_batches():
    lengths = [5, 40, 12, 40, 3, 100, 7]
    by_tokens = plan_batches(lengths, max_tokens=80)
    assert sorted(i for batch in by_tokens for i in batch) == list(range(len(lengths)))
    assert by_tokens[0] == [5]  # longer than the budget: alone
    for batch in by_tokens:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 80
    assert [lengths[i] for batch in by_tokens for i in batch] == sorted(lengths, reverse=True)
    assert plan_batches(lengths, max_texts=3) == [[5, 1, 3], [2, 6, 0], [4]]
    assert plan_batches([], max_texts=3) == []


def test_tokenizing_runs_on_its_own_thread_and_its_errors_reach_the_caller(minilm, monkeypatch):
    threads = []
    real = minilm.fast.transformer.preprocess

    def preprocess(texts, **kwargs):
        threads.append(threading.current_thread().name)
        if "boom" in texts:
            raise ValueError("tokenizer failed")
        return real(texts, **kwargs)

    monkeypatch.setattr(minilm.fast.transformer, "preprocess", preprocess)
    minilm.embed_documents(TEXTS)
    assert len(threads) >= 2 and all(name.startswith("tokenize") for name in threads)  # 5 texts, 512 tokens a batch
    with pytest.raises(ValueError, match="tokenizer failed"):
        minilm.embed_documents(["boom"])


def test_pooling_reads_nothing_back_to_the_host():
    """fullgraph tracing fails on any data-dependent branch (a host read on a GPU), as it
    does on sentence-transformers' own `if pad_lengths.sum() == 0`."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    hidden, mask = torch.randn(3, 9, 8), torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ours = torch.compile(mean_pool, backend="eager", fullgraph=True)(hidden, mask, 2)
    expected = Pooling(8, "mean", include_prompt=False)({"token_embeddings": hidden, "attention_mask": mask, "prompt_length": 2})["sentence_embedding"]
    torch.testing.assert_close(ours, expected)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="(?i)data.dependent|graph break|unsupported"):
        torch.compile(Pooling._exclude_prompt_from_mask, backend="eager", fullgraph=True)(mask, 2)


def test_a_user_setting_of_tokenizer_parallelism_wins(monkeypatch):
    from ragbatch.models import embedder

    monkeypatch.delenv(embedder.OUR_DEFAULT, raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    embedder.tokenizer_parallelism("cuda")
    assert embedder.os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv(embedder.OUR_DEFAULT, "1")  # quiet.py's default, not the user's
    embedder.tokenizer_parallelism("cuda")
    assert embedder.os.environ["TOKENIZERS_PARALLELISM"] == "true"
    embedder.tokenizer_parallelism("cpu")
    assert embedder.os.environ["TOKENIZERS_PARALLELISM"] == "false"
