"""A store's vectors behind one small protocol, and the one factory that opens them.

Two implementations share `ChromaCollection`'s operations: `LocalVectors` (STORE/chroma)
and `ServerVectors` (a collection on a Chroma server). The manifest says which one a
store uses; nothing else asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from ragbatch.store.collection import Ranking
from ragbatch.store.local import LocalVectors
from ragbatch.store.manifest import Manifest
from ragbatch.store.records import Hit, Stored
from ragbatch.store.server import ServerAddress, ServerVectors


class Vectors(Protocol):
    """get, upsert, delete and query over a store's chunks and their vectors."""

    max_batch: int
    where: str  # the collection as messages name it

    def count(self) -> int: ...
    def records(self) -> Iterator[tuple[str, str, dict]]: ...
    def scan(self) -> Iterator[tuple[str, dict]]: ...
    def existing(self) -> dict[str, Stored]: ...
    def get(self, ids: Iterable[str], text: bool = True) -> Iterator[tuple[str, str, dict]]: ...
    def indexed_texts(self, ids: list[str]) -> list[tuple[str, str]]: ...
    def embeddings(self, ids: list[str]) -> dict: ...
    def sources(self, ids: Iterable[str]) -> dict[str, str]: ...
    def upsert(self, chunks: list[dict], embeddings) -> None: ...
    def update_places(self, chunks: list[dict]) -> None: ...
    def delete(self, ids: list[str]) -> None: ...
    def query(self, embeddings, k: int, ids: set[str] | None = None) -> list[Ranking]: ...
    def hits(self, rankings: list[Ranking]) -> list[list[Hit]]: ...
    def lost_samples(self, sample: int) -> tuple[int, int]: ...
    def close(self) -> None: ...


def server_address(manifest: Manifest) -> ServerAddress | None:
    """Where the store's vectors are on a Chroma server; None for its own folder."""
    return ServerAddress(manifest.server, manifest.collection, manifest.owner()) if manifest.server else None


def open_vectors(store: Path, manifest: Manifest, create: bool = False) -> Vectors:
    """The store's vector collection: its local Chroma folder, or the Chroma server its
    manifest names."""
    address = server_address(manifest)
    if address is not None:
        return ServerVectors(address, create=create)
    return LocalVectors(store, manifest.collection, create=create)
