"""Write throughput of ragbatch's Chroma writers: the local writer against its record
format, upsert block sizes and Chroma's HNSW settings; the server path with 1, 2 and 4
concurrent writers; and the encoder beside them.

N precomputed unit vectors with ragbatch's chunk fields (a ~700-character text, source,
path, root, title, section, position, start, context, anchors) go into a fresh collection
per row, and each row reports vectors/s (wall clock, from the first upsert to the last
write returned and the client closed), vectors per CPU-second of the writing process (the
local rows; steadier than the wall clock on a machine shared with other jobs), and
recall@10 of Q held-out queries against brute force. Every row runs in the same process
run, so the ratios against `today` are measured under the same machine load.

Local rows (`writer@block[+hnsw]`):
- `today`: the writer before 2026-11-22: the text as Chroma's document and one metadata
  key per field, one upsert per encode block as the encoder yields them;
- `packed`: ragbatch's record format now (store.RECORD_KEY: text and fields in one
  JSON value, no Chroma document), one upsert per block;
- `ragbatch`: ragbatch's own `BackgroundWriter` and `LocalVectors` fed blocks faster than
  it writes them (as behind a GPU): waiting blocks are merged up to Chroma's maximum
  batch (5,461);
- `+hnsw` names a Chroma HNSW configuration from SETTINGS beside space=cosine.
Server rows: `chroma run` on this machine, W writer processes each upserting N/W vectors
in blocks through `chroma_server.ServerVectors` (ragbatch's format), all at once.

The vectors are not random points on the sphere (on which any HNSW recalls poorly and
unlike real embeddings): they are a 48-dimensional latent mixture of 200 clusters lifted
to DIM dimensions with noise, normalised, so neighbours are meaningful as with a text
embedder's output.

    python benchmarks/write_bench.py [--n 50000] [--dims 384,768] [--queries 300]
        [--local today@512,ragbatch@512,...] [--server 1@512,2@512,4@512] [--encoder 256]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Chroma 1.5 defaults: ef_construction 100, max_neighbors 16, ef_search 100,
# num_threads = cores, batch_size 100, sync_threshold 1000, resize_factor 1.2.
SETTINGS = {
    "sync100k": {"sync_threshold": 100_000},
    "batch5k": {"batch_size": 5_000},
    "batch5k+sync100k": {"batch_size": 5_000, "sync_threshold": 100_000},
    "threads1": {"num_threads": 1},
    "ef64": {"ef_construction": 64},
    "m12": {"max_neighbors": 12},
}
DEFAULT_LOCAL = "today@512,today@5461,packed@512,ragbatch@512,ragbatch@512+batch5k+sync100k,ragbatch@512+threads1,ragbatch@512+ef64,ragbatch@512+m12"


def make_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(200, 48))
    latent = centers[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, 48))
    lift = rng.normal(size=(48, dim)) / np.sqrt(48)
    x = latent @ lift + 0.15 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_chunks(n: int, seed: int = 0) -> list[dict]:
    """ragbatch chunks: a ~700-character text and every stored field, 40 chunks a file."""
    rng = np.random.default_rng(seed)
    words = np.array("the steamer reached port and passepartout bought oranges ray schedules tasks on gpus with batch inference data nodes cluster".split())
    return [
        {
            "id": f"{i:032x}",
            "text": " ".join(words[rng.integers(0, len(words), 110)]),
            "source": f"doc{i // 40}.html#section-{i % 40}",
            "path": f"/corpus/doc{i // 40}.html",
            "root": "/corpus",
            "title": f"Section {i % 40}",
            "section": i % 40,
            "position": i % 3,
            "start": 0,
            "context": f"Document {i // 40} › Section {i % 40}",
            "anchors": "",
        }
        for i in range(n)
    ]


def _new_collection(folder: str, hnsw: dict):
    import chromadb
    from chromadb.config import Settings

    from ragbatch.store.collection import HNSW_EF_SEARCH

    client = chromadb.PersistentClient(path=folder, settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection(
        "chunks", configuration={"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH, **hnsw}}, embedding_function=None
    )
    return client, collection


def write_local(folder: str, writer: str, block: int, hnsw: dict, vectors: np.ndarray, chunks: list[dict]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to write everything and close."""
    from ragbatch.ingest.writer import BackgroundWriter
    from ragbatch.store.local import LocalVectors
    from ragbatch.store.records import CHUNK_FIELDS, pack

    client, collection = _new_collection(os.path.join(folder, "chroma"), hnsw)
    if writer == "ragbatch":
        client.close()
        store = LocalVectors(Path(folder), "chunks", create=True)  # opens the collection made above, with its settings
    started, cpu = time.perf_counter(), time.process_time()
    if writer == "ragbatch":
        with BackgroundWriter(store) as background:
            for start in range(0, len(vectors), block):
                background.put(chunks[start : start + block], vectors[start : start + block])
        store.close()
    else:
        for start in range(0, len(vectors), block):
            for part in range(start, min(start + block, len(vectors)), 5461):
                end = min(part + 5461, start + block, len(vectors))
                rows = chunks[part:end]
                if writer == "today":
                    payload = {"documents": [c["text"] for c in rows], "metadatas": [{k: c.get(k, "") for k in CHUNK_FIELDS} for c in rows]}
                else:
                    payload = {"metadatas": [pack(c) for c in rows]}
                collection.upsert(ids=[c["id"] for c in rows], embeddings=vectors[part:end], **payload)
        client.close()
    return time.perf_counter() - started, time.process_time() - cpu


def recall(collection, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    got = collection.query(query_embeddings=queries, n_results=k, include=[])["ids"]
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    hits = sum(len({int(i, 16) for i in ids} & set(row.tolist())) for ids, row in zip(got, truth))
    return hits / (k * len(queries))


def local_recall(folder: str, vectors: np.ndarray, queries: np.ndarray) -> float:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=os.path.join(folder, "chroma"), settings=Settings(anonymized_telemetry=False))
    try:
        return recall(client.get_collection("chunks", embedding_function=None), vectors, queries)
    finally:
        client.close()


_SERVER_WRITER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from ragbatch.store.server import ServerAddress, ServerVectors
data = np.load(sys.argv[2])
import json
chunks = json.loads(open(sys.argv[3]).read())
block = int(sys.argv[6])
store = ServerVectors(ServerAddress(sys.argv[4], sys.argv[5]))
sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
for start in range(0, len(data), block):
    store.upsert(chunks[start : start + block], data[start : start + block])
store.close()
"""


def write_server(work: str, writers: int, block: int, vectors: np.ndarray, chunks: list[dict], queries: np.ndarray) -> tuple[float, float]:
    """(wall seconds from the go signal until every writer process has exited, recall@10)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from chroma_process import ChromaServer

    from ragbatch.store.server import ServerAddress, ServerVectors

    with ChromaServer(Path(work) / f"server-{writers}-{block}") as server:
        name = f"bench-{writers}-{block}"
        ServerVectors(ServerAddress(server.url, name), create=True).close()
        shares = np.array_split(np.arange(len(vectors)), writers)
        processes = []
        for w, share in enumerate(shares):
            np.save(f"{work}/v{w}.npy", vectors[share])
            Path(f"{work}/c{w}.json").write_text(json.dumps([chunks[i] for i in share]))
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SERVER_WRITER, str(ROOT), f"{work}/v{w}.npy", f"{work}/c{w}.json", server.url, name, str(block)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in processes:  # every writer has its data loaded and its client open
            assert p.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for p in processes:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in processes:
            assert p.wait() == 0
        seconds = time.perf_counter() - started
        store = ServerVectors(ServerAddress(server.url, name))
        try:
            assert store.count() == len(vectors), "the server lost vectors"
            r = recall(store.collection, vectors, queries)
        finally:
            store.close()
    return seconds, r


def encoder_rate(chunks: list[dict], n: int) -> float:
    """Vectors/s of the packaged MiniLM on this CPU, ragbatch's Embedder, the same texts."""
    from ragbatch.models.embedder import Embedder, resolve_embedder
    from ragbatch.store.records import indexed_text

    embedder = Embedder(resolve_embedder(None), device="cpu")
    texts = [indexed_text(c) for c in chunks[:n]]
    embedder.embed_documents(texts[:32])  # warm-up
    started = time.perf_counter()
    embedder.embed_documents(texts)
    return n / (time.perf_counter() - started)


def parse_local(spec: str) -> tuple[str, int, str]:
    head, _, hnsw = spec.partition("+")
    writer, _, block = head.partition("@")
    return writer, int(block or 512), hnsw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dims", default="384,768")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--local", default=DEFAULT_LOCAL, help="writer@block[+setting], comma-separated")
    parser.add_argument("--local-768", default="today@512,ragbatch@512", help="the rows for dimensions above 384")
    parser.add_argument("--server", default="1@512,2@512,4@512,1@5461,2@5461,4@5461", help="writers@block, comma-separated (384 dims only)")
    parser.add_argument("--encoder", type=int, default=256, help="chunks encoded to measure the encoder (0: skip)")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="write-bench-")
    chunks = make_chunks(args.n)
    print(f"chromadb writers: {args.n} vectors, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    print("| dims | row | vectors/s | ratio to today@512 | vectors per CPU-s | recall@10 |")
    print("|---|---|---|---|---|---|")
    for dim in [int(d) for d in args.dims.split(",")]:
        everything = make_vectors(args.n + args.queries, dim)
        vectors, queries = everything[: args.n], everything[args.n :]
        base = None
        rows = args.local if dim <= 384 else args.local_768
        for spec in rows.split(","):
            writer, block, setting = parse_local(spec)
            folder = os.path.join(work, f"{dim}-{spec}".replace("+", "_").replace("@", "_"))
            seconds, cpu = write_local(folder, writer, block, {k: v for s in setting.split("+") if s for k, v in SETTINGS[s].items()}, vectors, chunks)
            rate = args.n / seconds
            base = base or rate
            print(f"| {dim} | {spec} | {rate:.0f} | {rate / base:.2f} | {args.n / cpu:.0f} | {local_recall(folder, vectors, queries):.3f} |", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
            gc.collect()
        if dim <= 384 and args.server:
            for spec in args.server.split(","):
                writers, _, block = spec.partition("@")
                seconds, r = write_server(work, int(writers), int(block), vectors, chunks, queries)
                rate = args.n / seconds
                print(f"| {dim} | server, {writers} writer(s) @{block} | {rate:.0f} | {rate / base:.2f} | - | {r:.3f} |", flush=True)
                gc.collect()
    if args.encoder:
        print(f"\nencoder (packaged all-MiniLM-L6-v2, CPU, {args.encoder} of these chunks): {encoder_rate(chunks, args.encoder):.1f} vectors/s")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
