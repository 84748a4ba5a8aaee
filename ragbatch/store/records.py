"""What a store holds per chunk: the `Chunk` record, how it is packed into Chroma's
metadata, and the `Hit` a search returns.

A chunk's fields are written out once, here (`Chunk`, `CHUNK_FIELDS`): chunking makes
them, the executors carry them, the store packs them and retrieval reads them back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple, TypedDict


class Chunk(TypedDict):
    """One chunk of one file's section, as chunking makes it and the store keeps it."""

    id: str  # content hash of (source, text, chunking parameters, context): see chunking.chunk_id
    source: str  # path relative to the indexed root, plus `#anchor` for a section
    path: str  # the file it was read from, as discovered (finds chunks of changed files)
    root: str  # the PATH given that found the file (finds files that disappeared)
    title: str  # section title
    section: int  # section number in the file
    position: int  # chunk number in the file
    start: int  # character offset in its section's text
    lines: str  # "L120-L134" for plain text, else ""
    text: str  # what is stored, shown and cited
    context: str  # page title and section path: embedded and BM25-indexed with the text
    anchors: str  # other link targets inside its section, space-separated
    key: str  # text_key(): chunks with the same key share one vector (see copies.py)


# The fields kept with every vector besides its text. `position`, `start` and `lines` are
# the chunk's place (PLACE_FIELDS), which an edit above it changes without changing its id
# (see ChromaCollection.update_places).
CHUNK_FIELDS = ("source", "path", "root", "title", "section", "position", "start", "lines", "context", "anchors", "key")
PLACE_FIELDS = ("position", "start", "lines")
# Each chunk is stored as one metadata value, RECORD_KEY: a JSON object of its text and its
# CHUNK_FIELDS; Chroma's own `documents` are left empty. Chroma 1.5's SQLite segment
# writes a trigram full-text index of every document and a row with three index entries
# per metadata key, neither of which ragbatch reads (BM25 and `where` filters are its
# own): one packed value wrote 50k vectors about twice as fast (benchmarks/RESULTS.md,
# 2026-11-22). Records of older stores (a document and one key per field) are read too.
RECORD_KEY = "ragbatch"


def indexed_text(chunk: dict) -> str:
    """What the embedder and BM25 read for a chunk: its context line, a blank line, its text."""
    context = chunk.get("context") or ""
    return f"{context}\n\n{chunk['text']}" if context else chunk["text"]


def text_key(chunk: dict) -> str:
    """A hash of the text the embedder reads for a chunk: chunks with the same key have the
    same vector, so a store keeps one (copies.py)."""
    return hashlib.sha256(indexed_text(chunk).encode("utf-8")).hexdigest()[:32]


def pack(chunk: dict) -> dict:
    """A chunk's Chroma metadata: its text and fields as one JSON value."""
    return {RECORD_KEY: json.dumps({"text": chunk["text"], **{k: chunk.get(k, "") for k in CHUNK_FIELDS}}, ensure_ascii=False, separators=(",", ":"))}


def unpack(document: str | None, metadata: dict | None) -> tuple[str, dict]:
    """(text, fields) of a stored chunk, packed (see RECORD_KEY) or as older stores wrote it.
    Records written before keys were stored get theirs from their text (where it was read)."""
    metadata = metadata or {}
    packed = metadata.get(RECORD_KEY)
    if packed is None:
        text, fields = document or "", dict(metadata)
    else:
        fields = json.loads(packed)
        text = fields.pop("text", "")
    if not fields.get("key") and text:
        fields["key"] = text_key({"text": text, "context": fields.get("context")})
    return text, fields


@dataclass
class Hit:
    chunk_id: str
    source: str
    score: float  # cosine similarity for dense search; the ranking's own score otherwise
    text: str
    title: str
    anchors: tuple[str, ...] = ()  # other link targets inside its section (see readers/)
    lines: str = ""  # "L120-L134" for plain text, else ""
    also: tuple[str, ...] = ()  # the other places the same text is stored for, as cited (copies.py)

    @property
    def cited(self) -> str:
        """The source as answers and search show it: `around.txt#L120-L134`, `page.html#anchor`."""
        return f"{self.source}#{self.lines}" if self.lines else self.source

    @classmethod
    def of(cls, chunk_id: str, text: str, fields: dict, score: float) -> Hit:
        """A Hit from a stored chunk's unpacked text and fields."""
        anchors = tuple((fields.get("anchors") or "").split())
        return cls(chunk_id, fields.get("source", ""), float(score), text, fields.get("title", ""), anchors, fields.get("lines") or "")


class Stored(NamedTuple):
    """What a re-index needs to know of a stored chunk (held for every stored chunk)."""

    path: str  # interned: one string per file, not per chunk
    root: str
    place: int  # place_of() of its fields
    key: str  # text_key() of its text


def place_of(chunk: dict) -> int:
    """A hash of the chunk's place in its file (PLACE_FIELDS), to tell whether it moved."""
    return hash(tuple(chunk.get(key, "") for key in PLACE_FIELDS))
