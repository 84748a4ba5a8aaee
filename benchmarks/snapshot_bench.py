"""What `serve`'s snapshot of a local store costs: the copy taken at start and after each
finished index run (store/snapshot.py), against the store's size.

Builds a local store of N chunks (unit vectors of DIM dimensions, ~700-character texts,
ragbatch's chunk fields, written by ragbatch's own LocalVectors) plus a manifest, then
times take_snapshot R times: seconds, MB and MB/s. The index run of that store waits only
for the copy; the server's first request after a run pays it.

    python benchmarks/snapshot_bench.py [--n 100000] [--dim 384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ragbatch.store.local import LocalVectors
from ragbatch.store.snapshot import remove_snapshot, take_snapshot


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    text = ("ragbatch indexes text and HTML into a Chroma collection. " * 12)[:700]
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # on this disk, not a tmpfs
        store = Path(tmp) / "store"
        store.mkdir()
        vectors = LocalVectors(store, "chunks", create=True)
        started = time.perf_counter()
        for first in range(0, args.n, 5000):
            ids = range(first, min(first + 5000, args.n))
            chunks = [
                {"id": f"c{i:09d}", "key": f"k{i}", "text": f"{i} {text}", "source": f"docs/{i // 50}.txt", "path": f"/docs/{i // 50}.txt",
                 "root": "/docs", "title": "", "section": 0, "position": i % 50, "start": 0}
                for i in ids
            ]  # fmt: skip
            block = rng.normal(size=(len(chunks), args.dim)).astype(np.float32)
            vectors.upsert(chunks, block / np.linalg.norm(block, axis=1, keepdims=True))
        vectors.close()
        built = time.perf_counter() - started
        (store / "manifest.json").write_text(json.dumps({"chunks": args.n}))
        size = folder_bytes(store)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            copy, _ = take_snapshot(store, cache=Path(tmp) / "cache")
            times.append(time.perf_counter() - started)
            remove_snapshot(copy)
        shutil.rmtree(store)
    seconds = statistics.median(times)
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"store: {args.n} chunks x {args.dim} dims, {size / 1e6:.0f} MB on disk (written in {built:.0f} s)")
    print(f"snapshot: median {seconds:.2f} s of {', '.join(f'{t:.2f}' for t in times)}; {size / 1e6 / seconds:.0f} MB/s")
    print(f"per million chunks at this size: ~{seconds * 1e6 / args.n:.0f} s")


if __name__ == "__main__":
    main()
