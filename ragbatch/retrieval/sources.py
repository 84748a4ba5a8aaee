"""Sources as stored and cited: `page.html#section`, `around.txt` (cited `around.txt#L120-L134`)."""

from __future__ import annotations

from ragbatch.store.records import Hit


def page_of(source: str) -> str:
    """The page part of a source: everything before the first '#'."""
    return source.split("#", 1)[0]


def has_anchor(source: str) -> bool:
    return "#" in source


def ranked_sources(hits: list[Hit]) -> list[dict]:
    """`search`'s JSON results (and serve's /search): rank, source as cited, chunk id, score, text."""
    return [{"rank": rank, "source": h.cited, "chunk_id": h.chunk_id, "score": round(h.score, 6), "text": h.text} for rank, h in enumerate(hits, start=1)]
