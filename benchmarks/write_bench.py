"""Throughput of the local Chroma writer against HNSW settings and upsert block sizes.

Writes N precomputed unit vectors through one PersistentClient the way ragbatch does
(ids, vectors, ~700-character documents and its metadata keys, blocks upserted in order,
each block split at Chroma's max batch), into a fresh collection per setting, and reports
vectors/s (upserts plus close) and recall@10 of Q held-out queries against brute force
over the same vectors. Every setting runs in the same process run, so the ratios against
the default are measured under the same machine load.

The vectors are not random points on the sphere (on which any HNSW recalls poorly and
unlike real embeddings): they are a 48-dimensional latent mixture of 200 clusters lifted
to DIM dimensions with noise, normalised, so neighbours are meaningful as with a text
embedder's output.

    python benchmarks/write_bench.py [--n 50000] [--dims 384,768] [--queries 300]
        [--settings default,tuned,...] [--blocks 512,5461]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time

import numpy as np

# Chroma 1.5 defaults: ef_construction 100, max_neighbors 16, ef_search 100,
# num_threads = cores, batch_size 100, sync_threshold 1000, resize_factor 1.2.
SETTINGS = {
    "default": {},
    "sync100k": {"sync_threshold": 100_000},
    "batch5k": {"batch_size": 5_000},
    "batch5k+sync100k": {"batch_size": 5_000, "sync_threshold": 100_000},
    "sync100k+threads1": {"sync_threshold": 100_000, "num_threads": 1},
    "batch5k+sync100k+ef64": {"batch_size": 5_000, "sync_threshold": 100_000, "ef_construction": 64},
    "batch5k+sync100k+m12": {"batch_size": 5_000, "sync_threshold": 100_000, "max_neighbors": 12},
}


def make_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(200, 48))
    latent = centers[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, 48))
    lift = rng.normal(size=(48, dim)) / np.sqrt(48)
    x = latent @ lift + 0.15 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array("the steamer reached port and passepartout bought oranges ray schedules tasks on gpus with batch inference data nodes cluster".split())
    return [" ".join(words[rng.integers(0, len(words), 110)]) for _ in range(n)]


def write(folder: str, vectors: np.ndarray, docs: list[str], hnsw: dict, block: int) -> tuple[float, object]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=folder, settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("chunks", configuration={"hnsw": {"space": "cosine", **hnsw}}, embedding_function=None)
    max_batch = client.get_max_batch_size()
    started = time.perf_counter()
    for start in range(0, len(vectors), block):
        for part in range(start, min(start + block, len(vectors)), max_batch):
            end = min(part + max_batch, start + block, len(vectors))
            collection.upsert(
                ids=[f"{i:032x}" for i in range(part, end)],
                embeddings=vectors[part:end],
                documents=docs[part:end],
                metadatas=[
                    {"source": f"doc{i // 40}.txt", "path": f"/c/doc{i // 40}.txt", "root": "/c", "title": "", "section": 0, "position": i % 40, "start": 0}
                    for i in range(part, end)
                ],
            )
    client.close()
    return time.perf_counter() - started


def recall(folder: str, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=folder, settings=Settings(anonymized_telemetry=False))
    collection = client.get_collection("chunks", embedding_function=None)
    got = collection.query(query_embeddings=queries, n_results=k, include=[])["ids"]
    client.close()
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    hits = sum(len({int(i, 16) for i in ids} & set(row.tolist())) for ids, row in zip(got, truth))
    return hits / (k * len(queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dims", default="384,768")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--settings", default="default,batch5k+sync100k")
    parser.add_argument("--blocks", default="512,5461")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="write-bench-")
    docs = documents(args.n)
    print(f"chromadb writer: {args.n} vectors, cores {os.cpu_count()}; setting = Chroma HNSW configuration beside space=cosine")
    print("| dims | setting | block | vectors/s | ratio to default@512 | recall@10 |")
    print("|---|---|---|---|---|---|")
    for dim in [int(d) for d in args.dims.split(",")]:
        everything = make_vectors(args.n + args.queries, dim)
        vectors, queries = everything[: args.n], everything[args.n :]
        base = None
        for name in args.settings.split(","):
            for block in [int(b) for b in args.blocks.split(",")]:
                folder = os.path.join(work, f"{dim}-{name}-{block}")
                seconds = write(folder, vectors, docs, SETTINGS[name], block)
                rate = args.n / seconds
                base = base or rate
                r = recall(folder, vectors, queries)
                print(f"| {dim} | {name} | {block} | {rate:.0f} | {rate / base:.2f} | {r:.3f} |", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
                gc.collect()


if __name__ == "__main__":
    main()
