"""Indexing speed against its floor, from one run on this machine.

1. `ragbatch index corpora/around.txt` into a fresh store, as a user runs it (a new
   process: imports, model load, chunking and Chroma writes all in its wall time).
2. The floor: bare `model.encode` of exactly the chunk texts that run stored, same
   model, same batch size, in a process that already has the model loaded.
Floor and command alternate --repeat times (floor first and last); medians are used.

3. The naive script (naive_index.py): the ~20 lines a user would write instead (read,
   split, `model.encode`, `collection.add`), timed end to end with its imports, in turn
   with the command.

Prints ms per vector for each and the ratios the issues set targets for:
ms_per_vector / floor (target <= 1.05), wall per vector / floor (target <= 1.3), wall vs
the naive script (target <= 1.0: ragbatch does more, BM25, a manifest, incremental ids),
and the time a fresh interpreter takes to import sentence-transformers (torch,
transformers, scipy, sklearn), which the wall time includes and no code of ours removes.

    python benchmarks/index_bench.py [--corpus corpora/around.txt] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

    from ragbatch.store.records import unpack

    client = chromadb.PersistentClient(path=str(store / "chroma"))
    got = client.get_collection("chunks").get(include=["documents", "metadatas"])
    client.close()
    return [unpack(d, m)[0] for d, m in zip(got["documents"], got["metadatas"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT / "corpora" / "around.txt"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="command runs, each between two floor measurements")
    args = parser.parse_args()
    load_before = os.getloadavg()  # the cores are shared: a busy machine shows here

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        # A throw-away run to chunk the corpus and learn the texts for the floor.
        cmd = [sys.executable, str(ROOT / "cli.py"), "index", args.corpus, "--store", str(store), "--json", "--batch-size", str(args.batch_size)]
        subprocess.run(cmd, check=True, capture_output=True)
        texts = stored_texts(store)

        from sentence_transformers import SentenceTransformer

        from ragbatch.models.embedder import resolve_embedder

        model = SentenceTransformer(resolve_embedder(None).path, device="cpu")
        model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
        floors = [floor_ms_per_vector(model, texts, args.batch_size)]
        walls, reports, naive_walls = [], [], []
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for i in range(args.repeat):
            fresh = Path(tmp) / f"fresh-{i}"
            run = [str(fresh) if part == str(store) else part for part in cmd]
            started = time.perf_counter()
            result = subprocess.run(run, check=True, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            reports.append(json.loads(result.stdout))
            naive = [sys.executable, str(ROOT / "benchmarks" / "naive_index.py"), args.corpus, str(Path(tmp) / f"naive-{i}"), str(args.batch_size)]
            started = time.perf_counter()
            naive_chunks = int(subprocess.run(naive, check=True, capture_output=True, text=True, env=env).stdout.split()[-1])
            naive_walls.append(time.perf_counter() - started)
            floors.append(floor_ms_per_vector(model, texts, args.batch_size))

    # What no code of ours can remove: a fresh interpreter importing the model stack.
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sentence_transformers"], check=True)
    import_seconds = time.perf_counter() - started

    floor = statistics.median(floors)
    wall = statistics.median(walls)
    report = {"embedded": reports[0]["embedded"], "ms_per_vector": statistics.median(r["ms_per_vector"] for r in reports)}
    vectors = report["embedded"]
    wall_ms = 1000 * wall / vectors
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"corpus: {args.corpus}  chunks: {vectors}  batch size: {args.batch_size}")
    print(f"floor (bare model.encode): {floor:.2f} ms/vector  median of {', '.join(f'{f:.1f}' for f in floors)}")
    per_vector = ", ".join(f"{r['ms_per_vector']:.1f}" for r in reports)
    print(f"command runs (median used): ms_per_vector {per_vector}; wall {', '.join(f'{w:.1f}' for w in walls)} s")
    print(f"ragbatch ms_per_vector:    {report['ms_per_vector']:.2f} ms/vector  ratio {report['ms_per_vector'] / floor:.3f}  (target <= 1.05)")
    print(f"ragbatch wall per vector:  {wall_ms:.2f} ms/vector  ratio {wall_ms / floor:.3f}  (target <= 1.3)  wall {wall:.1f} s")
    naive_wall = statistics.median(naive_walls)
    print(
        f"naive script (read, split, encode, add; {naive_chunks} chunks): wall {', '.join(f'{w:.1f}' for w in naive_walls)} s, "
        f"{1000 * naive_wall / naive_chunks:.2f} ms/vector"
    )
    print(f"wall vs naive script: {wall / naive_wall:.3f}  (target <= 1.0); per vector {wall_ms / (1000 * naive_wall / naive_chunks):.3f}")
    rest_ms = 1000 * (wall - import_seconds) / vectors
    print(
        f"  of which `import sentence_transformers` in a fresh process: {import_seconds:.1f} s; wall without it: {rest_ms:.2f} ms/vector, ratio {rest_ms / floor:.3f}"
    )


if __name__ == "__main__":
    main()
