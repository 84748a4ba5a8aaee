"""What an index run did: the report `index` prints, and `--json` is."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexReport:
    files: int = 0
    chunks: int = 0  # every chunk in the store
    copies: int = 0  # of them, those whose text another chunk's vector stands for
    embedded: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped_files: int = 0
    errors: list[str] = field(default_factory=list)  # "file: why" of each file that could not be read
    skipped: list[str] = field(default_factory=list)  # "file: skipped (why)" of each file of a type not read
    skipped_detail: list[dict] = field(default_factory=list)  # {"file", "reason"} of both
    writers: set[str] = field(default_factory=set)  # processes that wrote vectors: "driver", or Ray actors' host:pid
    notices: list[str] = field(default_factory=list)  # choices the user should know of
    ms_per_vector: float | None = None
    seconds: float = 0.0
    executor: str = ""
    embedder: str = ""
    store: str = ""
    published: str | None = None

    def as_json(self) -> dict:
        return {
            "files": self.files,
            "chunks": self.chunks,
            "copies": self.copies,
            "embedded": self.embedded,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped_files": self.skipped_files,
            "skipped": self.skipped_detail,
            "vector_writers": sorted(self.writers),
            "errors": self.errors,
            "ms_per_vector": None if self.ms_per_vector is None else round(self.ms_per_vector, 3),
            "seconds": round(self.seconds, 3),
            "executor": self.executor,
            "embedder": self.embedder,
            "store": self.store,
            "published": self.published,
        }
