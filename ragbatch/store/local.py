"""A store's vectors in its own folder, `STORE/chroma/` (Chroma's PersistentClient)."""

from __future__ import annotations

from pathlib import Path

from ragbatch.errors import StoreError
from ragbatch.store.collection import HNSW_CONFIGURATION, ChromaCollection

CHROMA_DIR = "chroma"


class LocalVectors(ChromaCollection):
    """The collection `name` in STORE/chroma; `create` makes it if absent."""

    def __init__(self, store: Path, name: str, create: bool = False):
        import chromadb
        from chromadb.config import Settings

        self.path = Path(store) / CHROMA_DIR
        if not create and not (self.path / "chroma.sqlite3").exists():
            raise StoreError(f"{store}: no Chroma collection (was the index run interrupted before writing?)")
        client = chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False))
        try:
            if create:
                collection = client.get_or_create_collection(name, configuration=HNSW_CONFIGURATION, embedding_function=None)
            else:
                collection = client.get_collection(name, embedding_function=None)
        except Exception:  # noqa: BLE001 - chromadb raises NotFoundError or ValueError by version
            client.close()
            raise StoreError(f"{store}: the manifest names collection {name!r}, which Chroma does not have") from None
        super().__init__(client, collection, str(self.path))
