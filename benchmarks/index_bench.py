"""Indexing speed against its floor, from one run on this machine.

1. `ragbatch index corpora/around.txt` into a fresh store, as a user runs it (a new
   process: imports, model load, chunking and Chroma writes all in its wall time).
2. The floor: bare `model.encode` of exactly the chunk texts that run stored, same
   model, same batch size, in a process that already has the model loaded.
   Measured before and after step 1; the mean is used, both are printed.

Prints ms per vector for each and the ratios the issue sets targets for:
ms_per_vector / floor (target <= 1.05) and wall per vector / floor (target <= 1.3).

    python benchmarks/index_bench.py [--corpus corpora/around.txt] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def floor_ms_per_vector(model, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return 1000 * (time.perf_counter() - started) / len(texts)


def stored_texts(store: Path) -> list[str]:
    import chromadb

    client = chromadb.PersistentClient(path=str(store / "chroma"))
    texts = client.get_collection("chunks").get(include=["documents"])["documents"]
    client.close()
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT / "corpora" / "around.txt"))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        # A throw-away run to chunk the corpus and learn the texts for the floor.
        cmd = [sys.executable, str(ROOT / "cli.py"), "index", args.corpus, "--store", str(store), "--json", "--batch-size", str(args.batch_size)]
        subprocess.run(cmd, check=True, capture_output=True)
        texts = stored_texts(store)

        from sentence_transformers import SentenceTransformer

        from ragbatch.embedding import resolve_embedder

        model = SentenceTransformer(resolve_embedder(None).path, device="cpu")
        model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
        floor_before = floor_ms_per_vector(model, texts, args.batch_size)

        fresh = Path(tmp) / "fresh"
        cmd[cmd.index(str(store))] = str(fresh)
        started = time.perf_counter()
        result = subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - started
        report = json.loads(result.stdout)

        floor_after = floor_ms_per_vector(model, texts, args.batch_size)

    floor = (floor_before + floor_after) / 2
    vectors = report["embedded"]
    wall_ms = 1000 * wall / vectors
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"corpus: {args.corpus}  chunks: {vectors}  batch size: {args.batch_size}")
    print(f"floor (bare model.encode): {floor:.2f} ms/vector  (before {floor_before:.2f}, after {floor_after:.2f})")
    print(f"ragbatch ms_per_vector:    {report['ms_per_vector']:.2f} ms/vector  ratio {report['ms_per_vector'] / floor:.3f}  (target <= 1.05)")
    print(f"ragbatch wall per vector:  {wall_ms:.2f} ms/vector  ratio {wall_ms / floor:.3f}  (target <= 1.3)  wall {wall:.1f} s")


if __name__ == "__main__":
    main()
