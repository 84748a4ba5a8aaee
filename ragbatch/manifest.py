"""The store manifest: which embedder and chunking built a store, and what it holds.

`manifest.json` sits beside the Chroma folder. `ask`/`search` read the embedder from
it, and indexing with another embedder or other chunking parameters is refused,
since vectors of two models (or chunks of two sizes) must never share a collection.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.errors import StoreError
from ragbatch.locations import store_hint

MANIFEST = "manifest.json"
# 1: chunk texts as Chroma documents, one metadata key per field. 2: one packed JSON
# record per chunk (store.RECORD_KEY), which format-1 readers would see as empty texts.
# A store takes the newest format when a run writes it; newer formats are refused.
FORMAT = 2


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_manifest(store: Path) -> dict | None:
    path = Path(store) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable store manifest ({exc})") from None
    if manifest.get("format", 1) > FORMAT:
        raise StoreError(f"{store}: written by a newer ragbatch (store format {manifest['format']}, this one reads up to {FORMAT}); upgrade ragbatch")
    return manifest


def require_manifest(store: Path) -> dict:
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


def write_manifest(store: Path, manifest: dict) -> None:
    """Write atomically: a crash leaves the old manifest or the new one, never half."""
    path = Path(store) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_compatible(store: Path, manifest: dict, embedder: dict, chunking: dict) -> None:
    """Refuse to mix embedders or chunking parameters in one store."""
    stored = manifest["embedder"]
    for key in ("name", "revision", "document_instruction", "query_instruction"):
        if stored.get(key) != embedder.get(key):
            raise StoreError(
                f"{store}: built with embedder {stored['name']} ({stored.get('revision')}); "
                f"refusing to add vectors from {embedder['name']} ({embedder.get('revision')}). "
                "Use another --store, or the store's embedder."
            )
    if manifest["chunking"].get("context", 0) != chunking.get("context", 0):
        raise StoreError(
            f"{store}: its chunks were embedded {_context_words(manifest['chunking'].get('context', 0))}, "
            f"this ragbatch embeds them {_context_words(chunking.get('context', 0))}; "
            "index into a new --store (or delete this one) to rebuild it."
        )
    for key, value in chunking.items():
        if manifest["chunking"].get(key) != value:
            raise StoreError(
                f"{store}: built with {key.replace('_', '-')} {manifest['chunking'].get(key)}, not {value}; use the store's chunking or another --store."
            )


def _context_words(version: int) -> str:
    return "with their page and section titles" + (f" (context version {version})" if version != 1 else "") if version else "without page and section titles"


def new_manifest(embedder: dict, dimension: int, chunking: dict, collection: str) -> dict:
    stamp = now()
    return {
        "format": FORMAT,
        "collection": collection,
        "embedder": embedder,
        "dimension": dimension,
        "chunking": chunking,
        "chunks": 0,
        "files": 0,
        "created": stamp,
        "updated": stamp,
    }
