"""The store manifest, `STORE/manifest.json`: which embedder and chunking built a store,
where its vectors are, and what it holds.

`ask` and `search` read the embedder from it, and indexing with another embedder or
other chunking parameters is refused: vectors of two models (or chunks of two sizes)
must never share a collection. `Manifest` is the one typed reading of the file; its JSON
keys are unchanged from the dict earlier releases wrote.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.errors import StoreError
from ragbatch.locations import store_hint
from ragbatch.models.embedder import EmbedderSpec

MANIFEST = "manifest.json"
# 1: chunk texts as Chroma documents, one metadata key per field. 2: one packed JSON
# record per chunk (records.RECORD_KEY), which format-1 readers would see as empty texts.
# 3: one vector per distinct text, the other chunks with that text in copies.parquet,
# which format-2 readers would not count. A store takes the newest format when a run
# writes it; newer formats are refused.
FORMAT = 3
REPAIR = "restore it from a published version (ROOT/NAME.versions/), or re-index into a new store"
# Contextual chunk text: what is embedded and BM25-indexed is the chunk's context line
# (page title and section path) above its text; what is stored, shown and cited is the
# text alone. The version is recorded with the chunking parameters (and so in every
# chunk id): a store whose vectors were made another way is refused, never mixed.
CONTEXT_VERSION = 1


@dataclass(frozen=True)
class ChunkingParams:
    chunk_size: int  # tokens of the embedder's tokenizer, special tokens excluded
    chunk_overlap: int
    context: int = CONTEXT_VERSION  # 0: the text alone is embedded (stores made before contexts)

    def as_dict(self) -> dict:
        params = {"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}
        if self.context:
            params["context"] = self.context
        return params

    @classmethod
    def from_dict(cls, data: dict) -> ChunkingParams:
        return cls(int(data["chunk_size"]), int(data["chunk_overlap"]), int(data.get("context", 0)))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Manifest:
    embedder: EmbedderSpec
    dimension: int
    chunking: ChunkingParams
    collection: str  # the Chroma collection's name
    server: str | None = None  # URL of the Chroma server holding the vectors; None: STORE/chroma
    chunks: int = 0  # every chunk of every file
    copies: int = 0  # of them, those whose text another chunk's vector stands for (copies.py)
    files: int = 0
    created: str = ""
    updated: str = ""
    format: int = FORMAT
    store_id: str = ""  # made once, when the store is: which store a published version came from
    origin: str = ""  # host:path where the store was made, for messages
    content: str = ""  # content_digest() when it was last published
    extra: dict = field(default_factory=dict)  # keys this ragbatch does not know, kept as they are

    @classmethod
    def new(cls, embedder: EmbedderSpec, dimension: int, chunking: ChunkingParams, collection: str, server: str | None = None) -> Manifest:
        stamp = now()
        return cls(embedder, dimension, chunking, collection, server, created=stamp, updated=stamp, store_id=uuid.uuid4().hex)

    def same_store(self, other: Manifest) -> bool:
        """Whether `other` describes the same store (a published version of it, say): by
        their store ids, or for stores made before ids by when and as what they were made."""
        if self.store_id and other.store_id:
            return self.store_id == other.store_id
        return (self.created, self.collection) == (other.created, other.collection)

    @classmethod
    def from_json(cls, data: object, path: Path) -> Manifest:
        """The manifest in `data` (parsed manifest.json); one StoreError line naming `path` if malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("chunks"), int) or not isinstance(data.get("collection"), str):
            raise StoreError(f"{path}: needs an integer 'chunks' and a string 'collection'; {REPAIR}")
        try:
            known = {"embedder", "dimension", "chunking", "collection", "chroma_url", "chunks", "copies", "files", "created", "updated", "format"}
            known |= {"store_id", "origin", "content"}
            recorded = data["embedder"]
            embedder = EmbedderSpec(
                recorded["name"], recorded["path"], recorded["revision"], recorded.get("document_instruction", ""), recorded.get("query_instruction", "")
            )
            return cls(
                embedder=embedder,
                dimension=int(data["dimension"]),
                chunking=ChunkingParams.from_dict(data["chunking"]),
                collection=data["collection"],
                server=data.get("chroma_url"),
                chunks=data["chunks"],
                copies=int(data.get("copies", 0)),
                files=int(data.get("files", 0)),
                created=data.get("created", ""),
                updated=data.get("updated", ""),
                format=int(data.get("format", 1)),
                store_id=data.get("store_id", ""),
                origin=data.get("origin", ""),
                content=data.get("content", ""),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{path}: incomplete store manifest (bad or missing {exc}); {REPAIR}") from None

    def as_json(self) -> dict:
        data = {
            **self.extra,
            "format": self.format,
            "collection": self.collection,
            "embedder": self.embedder.as_dict(),
            "dimension": self.dimension,
            "chunking": self.chunking.as_dict(),
            "chunks": self.chunks,
            "copies": self.copies,
            "files": self.files,
            "created": self.created,
            "updated": self.updated,
        }
        if self.server:
            data["chroma_url"] = self.server
        data.update({key: value for key, value in (("store_id", self.store_id), ("origin", self.origin), ("content", self.content)) if value})
        return data

    @property
    def vectors(self) -> int:
        """Vectors in the collection and documents in BM25: one per distinct text."""
        return self.chunks - self.copies

    def owner(self) -> str:
        """What a server collection's metadata records about the vectors it holds."""
        return f"{self.embedder.name} ({self.embedder.revision}), {self.dimension} dims"

    def check_compatible(self, store: Path, embedder: EmbedderSpec, chunking: ChunkingParams) -> None:
        """Refuse to mix embedders or chunking parameters in one store."""
        stored = self.embedder
        for key in ("name", "revision", "document_instruction", "query_instruction"):
            if getattr(stored, key) != getattr(embedder, key):
                raise StoreError(
                    f"{store}: built with embedder {stored.name} ({stored.revision}); "
                    f"refusing to add vectors from {embedder.name} ({embedder.revision}). "
                    "Use another {store}, or the store's embedder.",
                    refers=("store",),
                )
        if self.chunking.context != chunking.context:
            raise StoreError(
                f"{store}: its chunks were embedded {_context_words(self.chunking.context)}, "
                f"this ragbatch embeds them {_context_words(chunking.context)}; "
                "index into a new {store} (or delete this one) to rebuild it.",
                refers=("store",),
            )
        for key in ("chunk_size", "chunk_overlap"):
            if getattr(self.chunking, key) != getattr(chunking, key):
                raise StoreError(
                    f"{store}: built with {key.replace('_', '-')} {getattr(self.chunking, key)}, not {getattr(chunking, key)}; "
                    "use the store's chunking or another {store}.",
                    refers=("store",),
                )


def _context_words(version: int) -> str:
    return "with their page and section titles" + (f" (context version {version})" if version != 1 else "") if version else "without page and section titles"


def read_manifest(store: Path) -> Manifest | None:
    """The store's manifest, None where it has none; one StoreError line where it is damaged
    or written by a newer ragbatch."""
    path = Path(store) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable ({exc}); {REPAIR}") from None
    if isinstance(data, dict) and isinstance(data.get("format", 1), int) and data.get("format", 1) > FORMAT:
        raise StoreError(f"{store}: written by a newer ragbatch (store format {data['format']}, this one reads up to {FORMAT}); upgrade ragbatch")
    return Manifest.from_json(data, path)


def require_manifest(store: Path) -> Manifest:
    require_store_path(store)
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(f"{store}: not a ragbatch store (no {MANIFEST})")
    return manifest


def missing_store(store: Path) -> StoreError:
    """The error for a store that does not exist, saying which command creates it."""
    return StoreError(f"{store}: no such store yet; create it with `{store_hint(store)}`")


def require_store_path(store: Path) -> None:
    """Fail early, before reading inputs or loading models, when `store` does not exist."""
    if not os.path.lexists(store):
        raise missing_store(store)


def write_manifest(store: Path, manifest: Manifest) -> None:
    """Write atomically: a crash leaves the old manifest or the new one, never half."""
    path = Path(store) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.as_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
