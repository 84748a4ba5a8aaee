"""`ragbatch index`: files -> sections -> chunks -> vectors -> one Chroma writer (writer.py).

Only chunks whose content-hash id is not yet stored are embedded; chunks of files
that changed or disappeared from an indexed directory are deleted after the new
ones are written, so a crash at any point leaves a store that a re-run completes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.ingest import readers
from ragbatch.ingest.chunking import Chunker
from ragbatch.ingest.executor import Executor
from ragbatch.ingest.local_executor import LocalExecutor
from ragbatch.ingest.ray_executor import RayExecutor
from ragbatch.ingest.report import IndexReport
from ragbatch.ingest.stages import read_and_chunk
from ragbatch.ingest.writer import write_store
from ragbatch.models.embedder import EmbedderInfo, EmbedderLoader, EmbedderSpec, describe_embedder, new_store_embedder, resolve_embedder
from ragbatch.store.locks import WriterStatus, store_lock
from ragbatch.store.manifest import ChunkingParams, Manifest, read_manifest, write_manifest
from ragbatch.store.publish import origin_of, publish
from ragbatch.store.server import collection_name, connect, settle_url

COLLECTION = "chunks"
# Inputs larger than this go to Ray Data by default; below it Ray's start-up dominates.
RAY_THRESHOLD_BYTES = 64 * 2**20
EXECUTORS = ("auto", "local", "ray")


@dataclass
class IndexOptions:
    paths: list[str]
    store: Path
    publish_root: Path | None = None
    publish_name: str | None = None  # the name to publish under [default: the store folder's]
    force: bool = False  # publish over a name another store published
    embedder: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    batch_size: int = 32
    device: str = "auto"
    executor: str = "auto"
    keep: int = 3
    chroma: str | None = None  # http://HOST:PORT of a Chroma server for a new store's vectors


def choose_executor(name: str, files: list[dict]) -> str:
    """`auto`: Ray where RAY_ADDRESS names a cluster or the input is large, else local."""
    if name not in EXECUTORS:
        raise ParameterError("executor", name, "expected auto, local or ray")
    if name != "auto":
        return name
    if os.environ.get("RAY_ADDRESS"):
        return "ray"
    size = sum(os.path.getsize(f["path"]) for f in files if os.path.exists(f["path"]))
    return "ray" if size > RAY_THRESHOLD_BYTES else "local"


def make_executor(name: str, progress, device: str, batch_size: int) -> Executor:
    if name == "ray":
        return RayExecutor(progress, device=device, batch_size=batch_size)
    return LocalExecutor(progress)


def settle_settings(options: IndexOptions, manifest: Manifest | None, notices: list[str]) -> tuple[EmbedderSpec, EmbedderInfo, ChunkingParams]:
    """Embedder and chunking: from the options, else from an existing store, else defaults."""
    name = options.embedder or (manifest.embedder.name if manifest else None)
    spec = resolve_embedder(name) if name else new_store_embedder(options.device, notices)
    info = describe_embedder(spec)
    stored = manifest.chunking if manifest else None
    # Defaults fit the model's maximum sequence length, after special tokens and the
    # document instruction (it shares the sequence with the text).
    room = info.max_seq_length - info.special_tokens - info.instruction_tokens
    size = options.chunk_size or (stored.chunk_size if stored else min(256, room))
    overlap = options.chunk_overlap if options.chunk_overlap is not None else (stored.chunk_overlap if stored else size // 8)
    if size > room:
        raise ParameterError("chunk_size", size, f"{spec.name} reads at most {room} tokens of text per chunk")
    if overlap >= size:
        raise ParameterError("chunk_overlap", overlap, f"must be smaller than the chunk size ({size})")
    return spec, info, ChunkingParams(size, overlap)


def index(options: IndexOptions, progress) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport(store=str(options.store))
    discovery = readers.discover(options.paths)
    report.errors += [str(e) for e in discovery.errors]
    report.skipped += [str(e) for e in discovery.skipped]
    report.skipped_detail += [{"file": e.where, "reason": e.reason} for e in discovery.errors + discovery.skipped]
    files = discovery.files
    if not files:
        raise RagbatchError("nothing to index: " + ("; ".join(report.errors) or "no supported files (.txt, .html, .htm, .md) found"))

    store = Path(options.store)
    if options.chroma:  # a bad, refused or unreachable URL fails before the store is created
        _settle_server(store, read_manifest(store), options.chroma)
    with store_lock(store, command="ragbatch index") as status:  # held until the run (and its publish) ends
        return _index_locked(options, progress, store, files, report, started, status)


def _index_locked(options: IndexOptions, progress, store: Path, files: list[dict], report: IndexReport, started: float, status: WriterStatus) -> IndexReport:
    manifest = read_manifest(store)
    spec, info, params = settle_settings(options, manifest, report.notices)
    if manifest:
        manifest.check_compatible(store, spec, params)
    report.embedder = spec.name
    url = _settle_server(store, manifest, options.chroma)

    executor_name = choose_executor(options.executor, files)
    report.executor = executor_name
    loader = EmbedderLoader(spec, options.device, options.batch_size)
    executor = make_executor(executor_name, progress, options.device, options.batch_size)
    try:
        if manifest is None:
            manifest = Manifest.new(spec, info.dimension, params, collection_name(store) if url else COLLECTION, server=url)
            manifest.origin = origin_of(store)
            write_manifest(store, manifest)
        chunker = Chunker(info.tokenizer_json, params)
        write_store(store, manifest, executor, loader, files, lambda f: read_and_chunk(f, chunker), report, progress, status)
    finally:
        executor.close()
    report.skipped_files = len(report.errors) + len(report.skipped)

    if options.publish_root:
        published = publish(store, options.publish_root, keep=options.keep, name=options.publish_name, force=options.force)
        report.published = str(published.version)
        if published.unchanged:
            report.notices.append(f"{published.link}: already holds this content ({published.version.name}); nothing published")
    report.seconds = time.perf_counter() - started
    return report


def _settle_server(store: Path, manifest: Manifest | None, requested: str | None) -> str | None:
    """The Chroma server holding the store's vectors (None: its local folder), reached
    before any file is read: an unreachable server fails the run at once."""
    if not requested and not (manifest and manifest.server):
        return None
    url = settle_url(store, manifest.server if manifest else None, manifest is not None, requested)
    if url:
        connect(url).close()
    return url
