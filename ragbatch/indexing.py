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
from ragbatch.manifest import FORMAT, check_compatible, new_manifest, now, read_manifest, write_manifest
from ragbatch.store import BackgroundWriter, Stored, open_vectors, place_of, store_lock

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
            "embedded": self.embedded,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped_files": self.skipped_files,
            "vector_writers": sorted(self.writers),
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
        # A fatal row, not an exception: Ray keeps only the traceback text of an
        # exception raised in a task, and the driver is to show one line.
        fatal = input_not_visible(file)
        return [{**_EMPTY_CHUNK, "path": file["path"], "root": file["root"], "error": str(exc), "fatal": fatal}]
    return [{**chunk, "error": "", "fatal": ""} for chunk in chunks]


def input_not_visible(file: dict) -> str:
    """Why the whole run must stop, when the folder a missing file was found in is itself
    missing or empty here: a Ray node that cannot see the input would otherwise report
    every file as an error of its own. Empty when only the file is missing."""
    if os.path.exists(file["path"]):
        return ""
    folder = file["root"] if file["root"] != file["path"] else os.path.dirname(file["path"])
    if os.path.isdir(folder) and any(os.scandir(folder)):
        return ""
    import socket

    return f"{folder}: not visible on {socket.gethostname()} (missing or empty there), where it was to be read; run ragbatch where the input is"


_EMPTY_CHUNK = {
    "id": "",
    "source": "",
    "path": "",
    "root": "",
    "title": "",
    "section": 0,
    "position": 0,
    "start": 0,
    "lines": "",
    "text": "",
    "context": "",
    "anchors": "",
    "fatal": "",
}


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


def stale_ids(existing: dict[str, Stored], current: set[str], read_ok: set[str], discovered: set[str], dir_roots: set[str]) -> list[str]:
    """Stored chunks to delete: old chunks of files read again, and chunks of files
    that vanished from an indexed directory. Files that failed to read keep theirs."""
    stale = []
    for chunk_id, (path, root, _) in existing.items():
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
        if manifest is None:
            manifest = new_manifest(embedder_meta, info.dimension, params.as_dict(), COLLECTION)
            if url:
                from ragbatch.chroma_server import collection_name

                manifest.update(chroma_url=url, collection=collection_name(store))
            write_manifest(store, manifest)
        chunker = Chunker(info.tokenizer_json, params)
        write_store(store, manifest, executor, loader, files, lambda f: read_and_chunk(f, chunker), report, progress)
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


def write_store(store: Path, manifest: dict, executor, loader, files, read, report: IndexReport, progress) -> None:
    """Stream files through the executor (read, chunk, embed what is new) into the one
    writer; then delete what is stale, save the BM25 index and the manifest.

    The driver keeps only ids (of stored and current chunks) and the blocks in flight,
    never every text of the input: the executors yield block by block.
    """
    from ragbatch.chunking import indexed_text
    from ragbatch.lexical_build import LexicalBuilder, stored_count

    chroma = open_vectors(store, manifest, create=True)
    try:
        existing = chroma.existing()
        lagging = stored_count(store) != len(existing)  # a crash, or a store older than BM25
        lexical = LexicalBuilder(store, keep_old=not lagging)
        current: set[str] = set()  # ids of every chunk of this run's input
        failed: set[str] = set()
        moved: list[dict] = []  # stored chunks an edit above them moved in their file
        new_paths: set[str] = set()  # files with chunks written in this run
        read_paths: set[str] = set()  # for progress only
        read_task = progress.add_task("Reading", total=len(files))
        embed_task = progress.add_task("Embedding", total=None)
        encode_seconds = 0.0
        with BackgroundWriter(chroma) as writer:
            # A server collection (address() not None) is written by Ray's embed actors
            # themselves, which yield no vectors; everything else by the one writer here.
            for seen, block, vectors, seconds in executor.stream(files, read, existing.keys(), loader, server=chroma.address()):
                before = len(read_paths)
                for row in seen:
                    if row.get("fatal"):
                        raise RagbatchError(row["fatal"])
                    read_paths.add(row["path"])
                    if row["error"]:
                        report.errors.append(row["error"])
                        failed.add(row["path"])
                    else:
                        current.add(row["id"])
                        if row["id"] in existing and existing[row["id"]].place != place_of(row):
                            moved.append(row)
                # The same source indexed twice in one run: write its chunks once.
                keep = []
                for i, chunk in enumerate(block):
                    if chunk["id"] not in current:
                        current.add(chunk["id"])
                        keep.append(i)
                if len(keep) < len(block):
                    block, vectors = [block[i] for i in keep], (None if vectors is None else vectors[keep])
                if block:
                    if vectors is None:
                        report.writers.update(c["writer"] for c in block)
                    else:
                        writer.put(block, vectors)
                        report.writers.add("driver")
                    lexical.add((c["id"], indexed_text(c)) for c in block)  # to disk, part by part
                    written = {c["path"] for c in block}
                    new_paths |= written
                    read_paths |= written
                    report.embedded += len(block)
                    progress.advance(embed_task, len(block))
                encode_seconds += seconds
                progress.advance(read_task, len(read_paths) - before)
        report.unchanged = len(current) - report.embedded
        read_ok = {f["path"] for f in files} - failed
        report.files = len(read_ok)
        dir_roots = {f["root"] for f in files if f["root"] != f["path"]}
        stale = stale_ids(existing, current, read_ok, {f["path"] for f in files}, dir_roots)
        if moved:
            chroma.refresh_places(moved)  # after the writer: one thread writes Chroma at a time
        if stale:
            chroma.delete(stale)
        report.deleted = len(stale)
        # BM25 is saved after Chroma, so after a crash it can only lag behind; a lagging
        # (or missing) index is rebuilt with Chroma's other chunks, page by page.
        doomed = set(stale)
        if lagging:
            kept = [cid for cid in existing if cid not in doomed]
            for start in range(0, len(kept), chroma.max_batch):
                lexical.add(chroma.indexed_texts(kept[start : start + chroma.max_batch]))
        if lagging or stale or report.embedded:
            lexical.finish(stale)
        else:
            lexical.discard()
        report.chunks = chroma.count()
        if report.embedded:
            report.ms_per_vector = 1000 * encode_seconds / report.embedded
        paths = {stored.path for cid, stored in existing.items() if cid not in doomed} | new_paths
        manifest.update(chunks=report.chunks, files=len(paths), updated=now())
        if report.embedded or moved:
            manifest["format"] = FORMAT  # records written now are packed: older ragbatch must not read them
        write_manifest(store, manifest)
    finally:
        chroma.close()
