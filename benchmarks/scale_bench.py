"""Driver memory and throughput of `ragbatch index` on the Ray executor at two corpus sizes.

The corpus is synthetic: the text of /work/shared (squad-dev articles, raydocs pages with
their tags stripped, around.txt) cut into ~25 KB .txt files and repeated until the wanted
size; every file has its own name, so its chunks have their own ids. Each size is indexed
into a fresh store by a new process (`ragbatch.indexing.index`, as `ragbatch index
--executor ray` runs it), which reports its own peak RSS (VmHWM of the driver process only;
Ray's workers, raylet and object store are other processes and are not counted) before
it shuts Ray down. A second fresh process then opens the finished store's Chroma
collection and runs one query: its RSS growth is what Chroma itself (its HNSW index)
holds for that store, in whatever process opens it; "peak minus Chroma" is what the
pipeline and the rest of the writer hold.

Embedding would dominate on a 2-core CPU, so the encoder is a tiny random-weight BERT
(2 layers, width 64, MiniLM's tokenizer, max 256 tokens, a 64 -> 384 dense layer so the
vectors have MiniLM's 384 dimensions): what is measured is the pipeline and the writer.

    python benchmarks/scale_bench.py [--sizes-mb 5,50] [--code DIR]

`--code DIR` runs another checkout of ragbatch (e.g. `git archive` of the base commit)
for a before/after comparison.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.encoder_shapes import tiny_bert_shaped  # noqa: E402

SHARED = ROOT.parent / "shared"
FILE_BYTES = 25_000

CHILD = r"""
import json, sys, time
from pathlib import Path
from ragbatch.ingest.pipeline import IndexOptions, index
from ragbatch.progress import make_progress
import threading
corpus, store, embedder, chroma = sys.argv[1:5]
def status():
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line) if v.strip().endswith("kB")}
peaks = {"RssAnon": 0, "RssShmem": 0, "RssFile": 0}
timeline = []  # (seconds, RssAnon MiB) every 10 s: growth during the stream, or at the end?
def sample():  # the parts of RSS, sampled: VmHWM alone cannot say what grew
    begun = time.perf_counter()
    while True:
        now = status()
        for key in peaks:
            peaks[key] = max(peaks[key], now[key])
        if time.perf_counter() - begun >= 10 * len(timeline):
            timeline.append((round(time.perf_counter() - begun), now["RssAnon"] // 1024))
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
report = index(IndexOptions([corpus], Path(store), embedder=embedder, executor="ray", device="cpu", chroma=chroma or None), make_progress(False))
wall = time.perf_counter() - started
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
kb = lambda key: int(status[key].split()[0])
print("RESULT " + json.dumps({"report": report.as_json(), "wall": wall, "hwm_kb": kb("VmHWM"), "peaks_kb": peaks, "timeline": timeline}), flush=True)
"""


# Memory Chroma itself takes for a finished store: RSS of a fresh process before and after
# opening the collection and running one query (which loads its HNSW index).
CHROMA = r"""
import json, sys
import numpy as np
from pathlib import Path
def rss():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0])
import chromadb
before = rss()
client = chromadb.PersistentClient(path=sys.argv[1] + "/chroma")
collection = client.get_collection("chunks")
collection.query(query_embeddings=np.ones((1, 384), dtype=np.float32), n_results=5)
print("RESULT " + json.dumps({"chroma_kb": rss() - before}))
"""


def source_paragraphs() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted((SHARED / "eval" / "squad-dev" / "corpus").glob("*.txt"))]
    for page in sorted((SHARED / "eval" / "raydocs-dev" / "corpus").rglob("*.html")):
        text = re.sub(r"(?s)<(script|style).*?</\1>", " ", page.read_text(encoding="utf-8", errors="replace"))
        texts.append(html.unescape(re.sub(r"<[^>]+>", " ", text)))
    texts.append((SHARED / "corpora" / "around.txt").read_text(encoding="utf-8"))
    paragraphs = [" ".join(p.split()) for t in texts for p in re.split(r"\n\s*\n", t)]
    return [p for p in paragraphs if len(p) > 40]


def make_corpus(folder: Path, size: int, paragraphs: list[str]) -> int:
    """Files of ~FILE_BYTES cycling through the paragraphs until `size` bytes; returns the file count."""
    folder.mkdir(parents=True)
    written, number, at = 0, 0, 0
    while written < size:
        parts, length = [], 0
        while length < FILE_BYTES:
            parts.append(paragraphs[at % len(paragraphs)])
            length += len(parts[-1]) + 2
            at += 1
        data = "\n\n".join(parts)
        (folder / f"doc{number:05d}.txt").write_text(data, encoding="utf-8")
        written += len(data.encode())
        number += 1
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="5,50")
    parser.add_argument("--stores", default="local,server", help="local (Chroma in the driver), server (a `chroma run` process), or both")
    parser.add_argument("--code", default=str(ROOT), help="ragbatch checkout to run (default: this one)")
    parser.add_argument("--work", default=None, help="folder for corpora, stores and the encoder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="scale-bench-"))
    encoder = tiny_bert_shaped(work / "tiny-encoder")
    paragraphs = source_paragraphs()
    env = {**os.environ, "PYTHONPATH": str(Path(args.code).resolve()), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    rows = []
    for kind in args.stores.split(","):
        for mb in [float(s) for s in args.sizes_mb.split(",")]:
            corpus = work / f"corpus-{mb:g}mb"
            files = make_corpus(corpus, int(mb * 2**20), paragraphs) if not corpus.exists() else len(list(corpus.iterdir()))
            store = work / f"store-{kind}-{mb:g}mb-{time.time_ns()}"
            rows.append((kind, mb, files, *index_once(kind, corpus, store, encoder, env)))
            kind, mb, files, chunks, hwm, chroma, vps, inner, outer, peaks = rows[-1]
            print(
                f"{kind} {mb:g} MB: {files} files, {chunks} chunks, driver peak RSS {hwm:.0f} MiB, {vps:.0f} vectors/s "
                f"(index() {inner:.1f} s, process {outer:.1f} s); " + ", ".join(f"peak {key} {kb / 1024:.0f} MiB" for key, kb in peaks.items()),
                flush=True,
            )
    print()
    print(
        "| store | corpus | files | chunks | driver peak RSS (MiB) | Chroma RSS (MiB) | peak minus Chroma (MiB) | vectors/s (index call) | index call (s) | process wall (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, mb, files, chunks, hwm, chroma, vps, inner, outer, _ in rows:
        print(
            f"| {kind} | {mb:g} MB | {files} | {chunks} | {hwm:.0f} | {chroma:.0f} | {hwm - chroma if kind == 'local' else hwm:.0f} | {vps:.0f} | {inner:.1f} | {outer:.1f} |"
        )
    for kind in args.stores.split(","):
        mine = [row for row in rows if row[0] == kind]
        if len(mine) > 1:
            small, large = mine[0], mine[-1]
            print(f"\n{kind}: driver peak RSS ratio, largest / smallest: {large[4] / small[4]:.2f} (target <= 1.3)")
            if kind == "local":
                print(f"{kind}: without Chroma's own memory: {(large[4] - large[5]) / (small[4] - small[5]):.2f}")


def index_once(kind: str, corpus: Path, store: Path, encoder: Path, env: dict):
    """(chunks, driver peak RSS MiB, Chroma's RSS MiB, vectors/s, index() s, process s, RSS parts' peaks)
    of one index run in a fresh process. Chroma's RSS: for a local store, what a fresh
    process takes to open it and query once; for a server, the server's peak RSS."""
    server = None
    if kind == "server":
        sys.path.insert(0, str(ROOT / "tests"))
        from chroma_process import ChromaServer

        server = ChromaServer(store.with_name(store.name + "-server")).__enter__()
    try:
        started = time.perf_counter()
        child = [sys.executable, "-c", CHILD, str(corpus), str(store), str(encoder), server.url if server else ""]
        done = subprocess.run(child, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{kind} {corpus.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        result = json.loads(line[7:])
        print(f"  {kind} {corpus.name}: driver RssAnon every 10 s (s, MiB): {result['timeline']}", flush=True)
        if server:
            status = Path(f"/proc/{server.process.pid}/status").read_text()
            chroma = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
        else:
            probe = subprocess.run([sys.executable, "-c", CHROMA, str(store)], env=env, capture_output=True, text=True)
            chroma = json.loads(next(row for row in probe.stdout.splitlines() if row.startswith("RESULT "))[7:])["chroma_kb"] / 1024
    finally:
        if server:
            server.__exit__()
    report = result["report"]
    return report["chunks"], result["hwm_kb"] / 1024, chroma, report["embedded"] / result["wall"], result["wall"], wall, result["peaks_kb"]


if __name__ == "__main__":
    main()
