"""Restrict retrieval to some chunks: `where` KEY=VALUE pairs (all must match) and a `source_prefix`.

A filter is resolved once per search into the set of chunk ids it admits, read from the
stored metadata, and both retrievers search only those: Chroma through `query(ids=...)`,
BM25 by masking its scores. So dense, BM25 and hybrid see the same chunks, and a value
compares as text whatever its stored type (`--where section=0` matches the integer 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ragbatch.errors import ParameterError
from ragbatch.store.records import CHUNK_FIELDS


@dataclass(frozen=True)
class ChunkFilter:
    where: tuple[tuple[str, str], ...] = ()  # every (key, value) must match
    source_prefix: str = ""  # the chunk's source starts with it

    @classmethod
    def parse(cls, where: list[str] | tuple[str, ...] = (), source_prefix: str | None = None) -> ChunkFilter:
        pairs = []
        for item in where or ():
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ParameterError("where", repr(item), "expected KEY=VALUE, e.g. title=Installation")
            pairs.append((key.strip(), value))
        return cls(tuple(pairs), source_prefix or "")

    def __bool__(self) -> bool:
        return bool(self.where or self.source_prefix)

    def matches(self, metadata: dict) -> bool:
        if self.source_prefix and not str(metadata.get("source", "")).startswith(self.source_prefix):
            return False
        return all(key in metadata and _as_text(metadata[key]) == value for key, value in self.where)

    def check_keys(self, known: set[str]) -> None:
        unknown = sorted({key for key, _ in self.where} - known)
        if unknown:
            raise ParameterError("where", unknown[0], f"chunks have no such field; fields: {', '.join(sorted(known))}")

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.where]
        if self.source_prefix:
            parts.append(f"source starts with {self.source_prefix!r}")
        return ", ".join(parts)


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def allowed_ids(vectors, chunk_filter: ChunkFilter, copies: dict[str, list[dict]]) -> tuple[set[str], dict[str, dict]]:
    """(Ids of the stored vectors the filter admits, the copy to cite for each vector admitted
    only through one of its copies): one paged read of the stored fields. `copies` maps a
    vector's id to the other chunks that share it (store/copies.py)."""
    chunk_filter.check_keys(set(CHUNK_FIELDS))
    allowed = {chunk_id for chunk_id, fields in vectors.scan() if chunk_filter.matches(fields or {})}
    cite_as = {}
    for rep, others in copies.items():
        if rep not in allowed:
            matching = next((copy for copy in others if chunk_filter.matches(copy)), None)
            if matching is not None:
                allowed.add(rep)
                cite_as[rep] = matching
    return allowed, cite_as
