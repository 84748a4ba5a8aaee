"""The Embedder's encode loop, in place of sentence-transformers' `encode`: the same
modules and tokenization, with three changes that matter on a GPU.

- The next batch is tokenized (and, on CUDA, pinned) on a thread while the model runs
  the current one; the fast tokenizer releases the GIL.
- INSTRUCTOR's prompt-excluded mean pooling without a host sync: sentence-transformers'
  Pooling asks `pad_lengths.sum() == 0` (a GPU -> CPU read) every batch to detect left
  padding; our tokenizers pad on the right, which `fast_path` checks once.
- Batches hold a budget of padded tokens, not a count of texts: short texts fill a
  batch, long ones do not overflow it (on the CPU too, where it measured 11 % faster
  than 32 texts on chunks of mixed length). Vectors stay on the device until the call ends.

Models that are not [Transformer, mean Pooling, ...] keep sentence-transformers' encode.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Cancelled(Exception):
    """encode stopped between batches (FastPath.cancel): the run is ending."""


# Padded tokens per batch on CUDA: instructor-large in bf16 stays at a few GB of
# activations, and the GPU is busy enough that tokenizing on a thread keeps ahead.
TOKENS_PER_BATCH = 32768
# On the CPU `batch_size` counts texts of this many tokens: the default 32 gives 8,192,
# which measured best there (benchmarks/RESULTS.md, 2026-12-06).
CPU_TOKENS_PER_TEXT = 256


def plan_batches(lengths: list[int], max_texts: int | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, longest first, in batches of at most `max_texts` texts and
    at most `max_tokens` padded tokens (texts x the batch's longest); a text longer than
    the budget gets a batch of its own. Sorting keeps padding low, as encode's own does."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is None or (max_texts and len(batch) >= max_texts) or (max_tokens and (len(batch) + 1) * lengths[batch[0]] > max_tokens):
            batches.append([i])
        else:
            batch.append(i)
    return batches


def mean_pool(token_embeddings, attention_mask, skip: int):
    """Mean over the unmasked positions after the first `skip` (the instruction's tokens,
    right-padded input), accumulated in float32 for half precision as sentence-transformers
    does. No value is read back to the host."""
    import torch

    if skip:
        attention_mask = attention_mask.clone()
        attention_mask[:, :skip] = 0
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    accumulate = torch.float32 if token_embeddings.dtype in (torch.float16, torch.bfloat16) else token_embeddings.dtype
    total = (token_embeddings * mask).sum(dim=1, dtype=accumulate)
    count = mask.sum(dim=1, dtype=accumulate).clamp(min=1e-9)
    return (total / count).to(token_embeddings.dtype)


class FastPath:
    """Runs a [Transformer, mean Pooling, modules after it...] sentence-transformers model."""

    def __init__(self, model, device: str):
        self.transformer, self.rest, self.device = model[0], list(model)[2:], device
        # One thread: it tokenizes batch N+1 while the model runs batch N.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.cancelled = False

    @classmethod
    def fits(cls, model, device: str) -> FastPath | None:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        modules = list(model)
        if len(modules) < 2 or not isinstance(modules[0], Transformer) or not isinstance(modules[1], Pooling):
            return None
        mode = modules[1].pooling_mode
        tokenizer = modules[0].tokenizer
        if mode not in ("mean", ("mean",), ["mean"]) or getattr(tokenizer, "padding_side", "right") != "right":
            return None
        if getattr(model, "default_prompt_name", None) or getattr(model, "truncate_dim", None):
            return None  # encode would add a prompt or cut the vectors: leave it to encode
        return cls(model, device)

    def encode(self, texts: list[str], prompt: str | None, max_tokens: int):
        """Batches of at most `max_tokens` padded tokens, longest texts first. Returns the
        vectors (not yet unit length) as one tensor on the device, a row per text in the
        order given."""
        import torch

        batches = plan_batches(self._token_lengths(texts, prompt), max_tokens=max_tokens)
        outputs = []
        # Made before the batches are queued: copying it later would wait for them.
        order = torch.tensor([i for batch in batches for i in batch], device=self.device)
        ahead = self.pool.submit(self._prepare, [texts[i] for i in batches[0]], prompt)
        for n in range(len(batches)):
            if self.cancelled:  # checked per batch: an interrupted run waits for one batch, not a whole call
                raise Cancelled()
            features = ahead.result()
            if n + 1 < len(batches):
                ahead = self.pool.submit(self._prepare, [texts[i] for i in batches[n + 1]], prompt)
            outputs.append(self._forward(features))
        vectors = torch.empty((len(texts), outputs[0].shape[1]), dtype=outputs[0].dtype, device=outputs[0].device)
        vectors[order] = torch.cat(outputs)
        return vectors

    def _token_lengths(self, texts: list[str], prompt: str | None) -> list[int]:
        """Each text's tokens with the prompt, truncated as the model will (on the tokenize
        thread, the one that uses the tokenizer)."""
        tokenizer, limit = self.transformer.tokenizer, self.transformer.max_seq_length
        prefixed = [(prompt or "") + t for t in texts]
        return self.pool.submit(lambda: [len(ids) for ids in tokenizer(prefixed, truncation=True, max_length=limit)["input_ids"]]).result()

    def _prepare(self, texts: list[str], prompt: str | None) -> dict[str, Any]:
        """sentence-transformers' own tokenization (prompt prepended, `prompt_length` set);
        on CUDA in pinned memory, so the copy to the GPU does not block."""
        import torch

        features = self.transformer.preprocess(texts, prompt=prompt)
        if self.device == "cuda":
            features = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return features

    def _forward(self, features: dict[str, Any]):
        import torch

        features = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        with torch.inference_mode():
            features = self.transformer(features)
            skip = int(features.get("prompt_length") or 0)  # a host int, from the tokenizer
            features["sentence_embedding"] = mean_pool(features["token_embeddings"], features["attention_mask"], skip)
            for module in self.rest:
                features = module(features)
        return features["sentence_embedding"]

    def cancel(self) -> None:
        """Make encode calls, this one and later ones, stop at their next batch (from
        another thread): a thread still inside torch when Python exits aborts it."""
        self.cancelled = True

    def close(self) -> None:
        self.pool.shutdown(wait=False)
