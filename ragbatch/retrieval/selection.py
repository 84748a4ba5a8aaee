"""What a search may retrieve, one type from the CLI and HTTP to the retriever: the mode,
k, the filters, the diversity limits and an optional reranker."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ragbatch.errors import ParameterError
from ragbatch.retrieval.filters import ChunkFilter

MODES = ("dense", "bm25", "hybrid")
DEFAULT_MODE = "hybrid"
DEFAULT_K = 5
# Diversity: at most this many chunks of one section (a source with an #anchor) in the top
# k; a further chunk of a section already shown yields its place to another section. Files
# without sections (plain text) are not limited. 0: no limit.
MAX_PER_SECTION = 1
# Reranking reads this many candidates (or k, if more) with a cross-encoder and keeps the
# top k of its order: the guide reranked the top 30 (ray-project/llm-applications).
RERANK_DEPTH = 30


@dataclass(frozen=True)
class Selection:
    mode: str = DEFAULT_MODE  # dense (vectors), bm25 (keywords) or hybrid (both, fused by rank)
    k: int = DEFAULT_K
    chunk_filter: ChunkFilter = field(default_factory=ChunkFilter)
    max_per_section: int = MAX_PER_SECTION  # 0: no limit
    max_per_page: int = 0  # 0: no limit
    rerank: str | None = None  # a cross-encoder that reorders the top candidates (models/reranker.py)
    rerank_depth: int = RERANK_DEPTH

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParameterError("retrieval", self.mode, f"expected one of {', '.join(MODES)}")
        if self.k < 1:
            raise ParameterError("k", self.k, "at least 1")
        if self.rerank_depth < 1:
            raise ParameterError("rerank_depth", self.rerank_depth, "at least 1")

    def in_mode(self, mode: str) -> Selection:
        return replace(self, mode=mode)

    @property
    def diverse(self) -> bool:
        return self.max_per_section > 0 or self.max_per_page > 0


def parse_modes(value: str) -> tuple[str, ...]:
    """ "dense,bm25,hybrid" -> the modes in that order, each once; unknown names refused."""
    modes = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    if not modes or any(m not in MODES for m in modes):
        raise ParameterError("retrieval", value, f"expected one or more of {', '.join(MODES)}, separated by commas")
    return modes
