"""Request bodies. FastAPI validates them: a malformed body gets 422 with the field named
in `detail[].loc` (e.g. ["body", "k"]) and why in `detail[].msg`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragbatch.retrieval.filters import ChunkFilter
from ragbatch.retrieval.selection import Selection


class SelectionFields(BaseModel):
    """Which chunks may be retrieved: `search`'s and `ask`'s options, per request."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, le=100, description="Passages retrieved.")
    retrieval: Literal["dense", "bm25", "hybrid"] = "hybrid"
    where: dict[str, str] = Field(default_factory=dict, description="Only chunks whose stored field equals the value (all must match).")
    source_prefix: str | None = None
    max_per_section: int = Field(1, ge=0)
    max_per_page: int = Field(0, ge=0)

    def selection(self) -> Selection:
        chunk_filter = ChunkFilter(tuple(self.where.items()), self.source_prefix or "")
        return Selection(self.retrieval, self.k, chunk_filter, self.max_per_section, self.max_per_page)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class SearchRequest(SelectionFields):
    question: str

    _question = field_validator("question")(_not_blank)


class GenerationFields(BaseModel):
    max_tokens: int = Field(128, ge=1, description="Most tokens in the answer.")
    temperature: float = Field(0.0, ge=0)
    seed: int | None = Field(None, description="A per-request sampling seed [default: none].")
    ignore_eos: bool = Field(False, description="Generate max_tokens whatever the model says (benchmarks).")
    stream: bool = False


class AskRequest(SelectionFields, GenerationFields):
    question: str
    id: str | None = Field(None, description="The row's id [default: q- and a hash of the question, as ask gives].")

    _question = field_validator("question")(_not_blank)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(SelectionFields):
    """OpenAI's chat-completions body; ragbatch's retrieval fields may ride along (extra_body)."""

    model_config = ConfigDict(extra="allow")  # OpenAI parameters we do not use are ignored

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    seed: int | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: dict | None = None
    ignore_eos: bool = False

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("needs a user message with text: retrieval runs on the last one")
        return messages

    def question(self) -> str:
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text().strip())

    def system_prompt(self) -> str | None:
        """The request's system (or developer) message, which replaces the server's system prompt."""
        found = [m.text() for m in self.messages if m.role in ("system", "developer")]
        return "\n\n".join(found) if found else None
