"""A store's vectors on a Chroma server: the second implementation of its collection.

`ragbatch index ... --chroma http://HOST:PORT` keeps the manifest and the BM25 index in
the store directory and the vectors in a collection on that server. The manifest records
the URL (`chroma_url`) and the collection's name (unique per store), so `search`, `ask`,
`eval`, `check` and later `index` runs find them with no flag, and a published copy of the
directory points at the same collection.

The server serialises writes, so several processes may upsert into one collection at
once (two clients of one local folder lose vectors that way). `ServerAddress` holds plain
values, so any process (a Ray embed actor) can open the collection. The collection
carries the embedder that made it in its metadata, and opening it for a manifest of
another embedder is refused, as indexing a local store with one is.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ragbatch.errors import ParameterError, StoreError
from ragbatch.store.collection import HNSW_CONFIGURATION, ChromaCollection

# Collection metadata naming the embedder whose vectors the collection holds.
OWNER_KEY = "ragbatch_embedder"


def normalise_url(url: str) -> str:
    """http(s)://HOST:PORT, lower-case scheme and host, no trailing slash; else one error line."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ParameterError("chroma", url, f"not a URL ({exc}); expected http://HOST:PORT") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise ParameterError("chroma", url, "expected http://HOST:PORT (or https://), e.g. http://localhost:8000")
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


def settle_url(store: Path, recorded: str | None, has_manifest: bool, requested: str | None) -> str | None:
    """The server an index run writes to: the manifest's (`recorded`), or `requested` for a
    new store. A store whose vectors live elsewhere (a local folder, another server) is refused."""
    requested = normalise_url(requested) if requested else None
    if not has_manifest:
        return requested
    if requested and not recorded:
        raise StoreError(
            f"{store}: its vectors are in {Path(store) / 'chroma'}, not on a Chroma server; leave out {{chroma}}, or index into a new {{store}}",
            refers=("chroma", "store"),
        )
    if requested and requested != recorded:
        raise StoreError(
            f"{store}: its vectors are on the Chroma server {recorded}, not {requested}; leave out {{chroma}}, or index into a new {{store}}",
            refers=("chroma", "store"),
        )
    return recorded


@dataclass(frozen=True)
class ServerAddress:
    """A server collection as plain values: what any process needs to open it."""

    url: str
    name: str
    owner: str | None = None  # expected in the collection's metadata (Manifest.owner)


class ServerVectors(ChromaCollection):
    """The collection `address.name` on the Chroma server at `address.url`.

    `address.owner` is checked against the collection's metadata, and recorded in it when
    `create` makes the collection."""

    def __init__(self, address: ServerAddress, create: bool = False):
        self.address = address
        client = connect(address.url)
        try:
            collection = self._open(client, create)
        except StoreError:
            client.close()
            raise
        except Exception as exc:  # noqa: BLE001 - the server went away between calls
            client.close()
            raise unreachable(address.url, exc) from None
        try:
            super().__init__(client, collection, f"Chroma server {address.url}, collection '{address.name}'")
        except Exception as exc:  # noqa: BLE001 - get_max_batch_size asks the server
            client.close()
            raise unreachable(address.url, exc) from None

    def _open(self, client, create: bool):
        from chromadb.errors import NotFoundError

        url, name, owner = self.address.url, self.address.name, self.address.owner
        try:
            collection = client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            if not create:
                raise StoreError(
                    f"Chroma server {url}: no collection {name!r} (the store's); was the server's data deleted? Re-index into a new {{store}}",
                    refers=("store",),
                ) from None
            metadata = {OWNER_KEY: owner} if owner else None
            return client.create_collection(name, configuration=HNSW_CONFIGURATION, metadata=metadata, embedding_function=None)
        found = (collection.metadata or {}).get(OWNER_KEY)
        if owner and found != owner:
            made = f"made by embedder {found}" if found else "not made by ragbatch"
            raise StoreError(
                f"Chroma server {url}: collection {name!r} was {made}; refusing to use it with {owner}. Use another {{store}}, or the collection's embedder.",
                refers=("store",),
            )
        return collection
