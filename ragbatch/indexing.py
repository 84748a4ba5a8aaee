"""`ragbatch index`: files -> sections -> chunks -> vectors -> one Chroma writer.

Only chunks whose content-hash id is not yet stored are embedded; chunks of files
that changed or disappeared from an indexed directory are deleted after the new
ones are written, so a crash at any point leaves a store that a re-run completes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ragbatch import readers
from ragbatch.chunking import Chunker, ChunkingParams
from ragbatch.embedding import EmbedderLoader, describe_embedder, new_store_embedder, resolve_embedder
from ragbatch.errors import InputFileError, RagbatchError
from ragbatch.manifest import check_compatible, new_manifest, now, read_manifest, write_manifest
from ragbatch.store import BackgroundWriter, open_vectors, store_lock

COLLECTION = "chunks"
# Inputs larger than this go to Ray Data by default; below it Ray's start-up dominates.
RAY_THRESHOLD_BYTES = 64 * 2**20


@dataclass
class IndexOptions:
    paths: list[str]
    store: Path
    publish_root: Path | None = None
    embedder: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    batch_size: int = 32
    device: str = "auto"
    executor: str = "auto"
    keep: int = 3
    chroma: str | None = None  # http://HOST:PORT of a Chroma server for a new store's vectors


@dataclass
class IndexReport:
    files: int = 0
    chunks: int = 0
    embedded: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped_files: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
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
            "embedded": self.embedded,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped_files": self.skipped_files,
            "errors": self.errors,
            "ms_per_vector": None if self.ms_per_vector is None else round(self.ms_per_vector, 3),
            "seconds": round(self.seconds, 3),
            "executor": self.executor,
            "embedder": self.embedder,
            "store": self.store,
            "published": self.published,
        }


def read_and_chunk(file: dict, chunker: Chunker) -> list[dict]:
    """Stage function for both executors: one file in, its chunks (or one error row) out.

    Every row has the same keys, so Ray Data can hold error rows beside chunk rows.
    """
    try:
        chunks = chunker.chunk_file(readers.read_file(file))
        if not chunks:
            raise InputFileError(file["path"], "no text found")
    except InputFileError as exc:
        return [{**_EMPTY_CHUNK, "path": file["path"], "root": file["root"], "error": str(exc)}]
    return [{**chunk, "error": ""} for chunk in chunks]


_EMPTY_CHUNK = {"id": "", "source": "", "path": "", "root": "", "title": "", "section": 0, "position": 0, "start": 0, "text": "", "context": "", "anchors": ""}


def choose_executor(name: str, files: list[dict]) -> str:
    if name != "auto":
        return name
    if os.environ.get("RAY_ADDRESS"):
        return "ray"
    size = sum(os.path.getsize(f["path"]) for f in files if os.path.exists(f["path"]))
    return "ray" if size > RAY_THRESHOLD_BYTES else "local"


def make_executor(name: str, progress, device: str, batch_size: int):
    if name == "ray":
        from ragbatch.ray_executor import RayExecutor

        return RayExecutor(progress, device=device, batch_size=batch_size)
    if name == "local":
        from ragbatch.local_executor import LocalExecutor

        return LocalExecutor(progress)
    raise RagbatchError(f"--executor {name}: expected auto, local or ray")


def settle_settings(options: IndexOptions, manifest: dict | None, notices: list[str]):
    """Embedder and chunking: from the options, else from an existing store, else defaults."""
    name = options.embedder or (manifest["embedder"]["name"] if manifest else None)
    spec = resolve_embedder(name) if name else new_store_embedder(options.device, notices)
    info = describe_embedder(spec)
    stored = manifest["chunking"] if manifest else {}
    # Defaults fit the model's maximum sequence length, after special tokens and the
    # document instruction (it shares the sequence with the text).
    room = info.max_seq_length - info.special_tokens - info.instruction_tokens
    size = options.chunk_size or stored.get("chunk_size") or min(256, room)
    overlap = options.chunk_overlap if options.chunk_overlap is not None else stored.get("chunk_overlap", size // 8)
    if size > room:
        raise RagbatchError(f"--chunk-size {size}: {spec.name} reads at most {room} tokens of text per chunk")
    if overlap >= size:
        raise RagbatchError(f"--chunk-overlap {overlap}: must be smaller than the chunk size ({size})")
    return spec, info, ChunkingParams(size, overlap)


def stale_ids(existing: dict[str, tuple[str, str]], current: set[str], read_ok: set[str], discovered: set[str], dir_roots: set[str]) -> list[str]:
    """Stored chunks to delete: old chunks of files read again, and chunks of files
    that vanished from an indexed directory. Files that failed to read keep theirs."""
    stale = []
    for chunk_id, (path, root) in existing.items():
        if chunk_id in current:
            continue
        if path in read_ok or (root in dir_roots and path not in discovered):
            stale.append(chunk_id)
    return stale


def index(options: IndexOptions, progress) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport(store=str(options.store))
    discovery = readers.discover(options.paths)
    report.errors += [str(e) for e in discovery.errors]
    report.skipped += discovery.skipped
    files = discovery.files
    if not files:
        raise RagbatchError("nothing to index: " + ("; ".join(report.errors) or "no supported files (.txt, .html, .htm, .md) found"))

    store = Path(options.store)
    if options.chroma:  # a bad, refused or unreachable URL fails before the store is created
        from ragbatch.chroma_server import connect, settle_url

        connect(settle_url(store, read_manifest(store), options.chroma)).close()
    with store_lock(store):  # held until the run (and its publish) ends
        return _index_locked(options, progress, store, files, report, started)


def _index_locked(options: IndexOptions, progress, store: Path, files: list[dict], report: IndexReport, started: float) -> IndexReport:
    manifest = read_manifest(store)
    spec, info, params = settle_settings(options, manifest, report.notices)
    embedder_meta = spec.as_dict()
    if manifest:
        check_compatible(store, manifest, embedder_meta, params.as_dict())
    report.embedder = spec.name
    url = _settle_server(store, manifest, options.chroma)

    executor_name = choose_executor(options.executor, files)
    report.executor = executor_name
    loader = EmbedderLoader(spec, options.device, options.batch_size)
    executor = make_executor(executor_name, progress, options.device, options.batch_size)
    try:
        chunks, read_ok = chunk_files(executor, files, Chunker(info.tokenizer_json, params), report)
        if manifest is None:
            manifest = new_manifest(embedder_meta, info.dimension, params.as_dict(), COLLECTION)
            if url:
                from ragbatch.chroma_server import collection_name

                manifest.update(chroma_url=url, collection=collection_name(store))
            write_manifest(store, manifest)
        write_store(store, manifest, executor, loader, files, chunks, read_ok, report)
    finally:
        executor.close()
    report.skipped_files = len(report.errors) + len(report.skipped)

    if options.publish_root:
        from ragbatch.publish import publish

        report.published = str(publish(store, options.publish_root, keep=options.keep))
    report.seconds = time.perf_counter() - started
    return report


def _settle_server(store: Path, manifest: dict | None, requested: str | None) -> str | None:
    """The Chroma server holding the store's vectors (None: its local folder), reached
    before any file is read: an unreachable server fails the run at once."""
    if not requested and not (manifest and manifest.get("chroma_url")):
        return None
    from ragbatch.chroma_server import connect, settle_url

    url = settle_url(store, manifest, requested)
    if url and not requested:
        connect(url).close()  # --chroma was reached before the lock was taken
    return url


def update_lexical(store: Path, chroma, existing: dict, new: list[dict], stale: list[str]) -> None:
    """Keep the BM25 index in step with Chroma: the same upserts and deletes.

    It is written after Chroma, so after a crash it can only lag behind; a lagging
    (or missing: a store made before it existed) index is backfilled from Chroma.
    """
    from ragbatch.chunking import indexed_text
    from ragbatch.lexical import LexicalIndex

    lexical = LexicalIndex.open(store)
    upserts = [(c["id"], indexed_text(c)) for c in new]
    if len(lexical) != len(existing):
        doomed = set(stale)
        upserts += chroma.indexed_texts([cid for cid in existing if cid not in doomed])
    if upserts or stale:
        lexical.update(upserts, stale)
        lexical.save()


def chunk_files(executor, files: list[dict], chunker: Chunker, report: IndexReport) -> tuple[list[dict], set[str]]:
    """Every file's chunks; failed files are reported and left out of `read_ok`."""
    chunks, failed = [], set()
    for row in executor.map_files(files, lambda f: read_and_chunk(f, chunker)):
        if row["error"]:
            report.errors.append(row["error"])
            failed.add(row["path"])
        else:
            chunks.append(row)
    read_ok = {f["path"] for f in files} - failed
    report.files = len(read_ok)
    return chunks, read_ok


def write_store(store: Path, manifest: dict, executor, loader, files, chunks, read_ok, report: IndexReport) -> None:
    """Embed what is new, write it, delete what is stale, then the BM25 index and manifest."""
    chroma = open_vectors(store, manifest, create=True)
    try:
        existing = chroma.existing()
        unique = {c["id"]: c for c in chunks}  # the same source indexed twice in one run
        new = [c for cid, c in unique.items() if cid not in existing]
        report.unchanged = len(unique) - len(new)
        dir_roots = {f["root"] for f in files if f["root"] != f["path"]}
        stale = stale_ids(existing, set(unique), read_ok, {f["path"] for f in files}, dir_roots)

        encode_seconds = 0.0
        # A server store takes writes from the executor's workers where it can (the
        # parallel path: they yield no vectors); otherwise the one writer here writes.
        sink = chroma.sink() if hasattr(chroma, "sink") and getattr(executor, "writes_to_sink", False) else None
        with BackgroundWriter(chroma) as writer:
            for block, vectors, seconds in executor.embed(new, loader, sink=sink) if sink else executor.embed(new, loader):
                if vectors is not None:
                    writer.put(block, vectors)
                encode_seconds += seconds
                report.embedded += len(block)
        if stale:
            chroma.delete(stale)
        report.deleted = len(stale)
        update_lexical(store, chroma, existing, new, stale)
        report.chunks = chroma.count()
        if report.embedded:
            report.ms_per_vector = 1000 * encode_seconds / report.embedded
        stale_set = set(stale)
        paths = {path for cid, (path, _) in existing.items() if cid not in stale_set} | {c["path"] for c in new}
        manifest.update(chunks=report.chunks, files=len(paths), updated=now())
        write_manifest(store, manifest)
    finally:
        chroma.close()
