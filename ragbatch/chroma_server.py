"""Vectors on a Chroma server: the second implementation of a store's vector collection.

`ragbatch index ... --chroma http://HOST:PORT` keeps the manifest and the BM25 index in
the store directory and the vectors in a collection on that server. The manifest records
the URL (`chroma_url`) and the collection's name (unique per store), so `search`, `ask`,
`eval`, `check` and later `index` runs find them with no flag, and a published copy of the
directory points at the same collection.

The server serialises writes, so several processes may upsert into one collection at
once (a local folder loses vectors that way: FACTS.md). `ServerStore` is built from plain
values (URL and collection name), so any process can open it. The
collection carries the embedder that made it in its metadata, and opening it with a
manifest of another embedder is refused, as indexing a local store with one is.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from ragbatch.errors import StoreError
from ragbatch.store import HNSW_EF_SEARCH, ChromaStore

# Collection metadata naming the embedder whose vectors the collection holds.
OWNER_KEY = "ragbatch_embedder"


def normalise_url(url: str) -> str:
    """http(s)://HOST:PORT, lower-case scheme and host, no trailing slash; else one error line."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise StoreError(f"--chroma {url}: not a URL ({exc}); expected http://HOST:PORT") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise StoreError(f"--chroma {url}: expected http://HOST:PORT (or https://), e.g. http://localhost:8000")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}:{port}"


def connect(url: str):
    """A chromadb HttpClient for `url`; an unreachable server is one line naming the URL."""
    import chromadb
    from chromadb.config import Settings

    parts = urlsplit(url)
    try:
        return chromadb.HttpClient(host=parts.hostname, port=parts.port, ssl=parts.scheme == "https", settings=Settings(anonymized_telemetry=False))
    except Exception as exc:  # noqa: BLE001 - chromadb raises ValueError, httpx errors by version
        raise unreachable(url, exc) from None


def unreachable(url: str, exc: BaseException) -> StoreError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"Chroma server {url}: unreachable ({reason}); start it (chroma run --path DIR --port PORT) or check the URL")


def collection_name(store: Path) -> str:
    """A name for a new store's collection: its folder name (for people listing the
    server) and a random part, so two stores never share one; Chroma's naming rules kept."""
    stem = re.sub(r"[^a-zA-Z0-9._-]+", "-", Path(store).resolve().name).strip("._-")[:40] or "store"
    return f"ragbatch-{stem}-{secrets.token_hex(6)}"


def owner(manifest: dict) -> str:
    """What the collection's metadata records about the vectors it holds."""
    embedder = manifest["embedder"]
    return f"{embedder['name']} ({embedder.get('revision')}), {manifest['dimension']} dims"


def settle_url(store: Path, manifest: dict | None, requested: str | None) -> str | None:
    """The server an index run writes to: the manifest's, or --chroma for a new store.

    A store whose vectors live elsewhere (a local folder, another server) is refused."""
    requested = normalise_url(requested) if requested else None
    if manifest is None:
        return requested
    recorded = manifest.get("chroma_url")
    if requested and not recorded:
        raise StoreError(f"{store}: its vectors are in {Path(store) / 'chroma'}, not on a Chroma server; leave out --chroma, or index into a new --store")
    if requested and requested != recorded:
        raise StoreError(f"{store}: its vectors are on the Chroma server {recorded}, not {requested}; leave out --chroma, or index into a new --store")
    return recorded


class ServerStore(ChromaStore):
    """The collection `name` on the Chroma server at `url`, with ChromaStore's reads and writes.

    `expected_owner` (see `owner`) is checked against the collection's metadata, and
    recorded in it when `create` makes the collection."""

    def __init__(self, url: str, name: str, create: bool = False, expected_owner: str | None = None):
        self.url = url
        self.expected_owner = expected_owner
        self.path = None
        self.client = connect(url)
        try:
            self.collection = self._open(name, create, expected_owner)
            self.max_batch = self.client.get_max_batch_size()
        except StoreError:
            self.client.close()
            raise
        except Exception as exc:  # noqa: BLE001 - the server went away between calls
            self.client.close()
            raise unreachable(url, exc) from None

    def address(self) -> dict:
        """ServerStore's arguments that open this collection in another process (a Ray
        embed actor writing beside others)."""
        return {"url": self.url, "name": self.collection.name, "expected_owner": self.expected_owner}

    def _open(self, name: str, create: bool, expected_owner: str | None):
        from chromadb.errors import NotFoundError

        try:
            collection = self.client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            if not create:
                raise StoreError(
                    f"Chroma server {self.url}: no collection {name!r} (the store's); was the server's data deleted? Re-index into a new --store"
                ) from None
            metadata = {OWNER_KEY: expected_owner} if expected_owner else None
            return self.client.create_collection(
                name, configuration={"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH}}, metadata=metadata, embedding_function=None
            )
        found = (collection.metadata or {}).get(OWNER_KEY)
        if expected_owner and found != expected_owner:
            made = f"made by embedder {found}" if found else "not made by ragbatch"
            raise StoreError(
                f"Chroma server {self.url}: collection {name!r} was {made}; refusing to use it with {expected_owner}. "
                "Use another --store, or the collection's embedder."
            )
        return collection
