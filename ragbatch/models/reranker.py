"""A cross-encoder that reorders retrieved passages by reading each with the question
(sentence-transformers' CrossEncoder: `BAAI/bge-reranker-base`,
`cross-encoder/ms-marco-MiniLM-L-6-v2`, or a local folder), found by the one model rule
(weights.py)."""

from __future__ import annotations

import os

from ragbatch.errors import ParameterError
from ragbatch.models.devices import pick_device
from ragbatch.models.weights import resolve_model


class Reranker:
    def __init__(self, name: str, device: str = "auto", batch_size: int = 32):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import CrossEncoder

        self.name = name
        self.path = resolve_model(name, "rerank", {}).path
        self.device = pick_device(device)
        self.batch_size = batch_size
        try:
            self.model = CrossEncoder(self.path, device=self.device)
        except Exception as exc:  # noqa: BLE001
            raise ParameterError("rerank", name, f"cannot load a cross-encoder from {self.path}: {exc}") from None

    def scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The relevance of each (question, passage), higher is better."""
        if not pairs:
            return []
        return [float(s) for s in self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)]

    def release(self) -> None:
        import gc

        self.model = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
