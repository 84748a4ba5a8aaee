"""OpenAI chat-completions shapes (`chat.completion` and `chat.completion.chunk`), plus
ragbatch's `sources` and `citations`, which OpenAI clients keep as extra fields (`response.sources`,
or `model_extra["sources"]` in the Python client)."""

from __future__ import annotations

import time
import uuid


class Completion:
    """One request's id, time and model, shared by its response or every chunk of its stream."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def response(self, row: dict, sources: list[dict], store: str, version: str) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": row["answer"]}, "finish_reason": row["finish_reason"], "logprobs": None}],
            "usage": usage(row),
            "sources": sources,
            "citations": row["citations"],
            "cost_usd": row["cost_usd"],
            "store": store,
            "version": version,
        }

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            **extra,
        }

    def usage_chunk(self, row: dict) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [], "usage": usage(row)}


def usage(row: dict) -> dict:
    return {
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
    }
