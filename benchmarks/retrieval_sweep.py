"""Retrieval quality of `ragbatch index` + `ragbatch eval` on the three evaluation sets.

For every (chunk size, overlap) it indexes each set's corpus with the embedded default
embedder (stores are kept under --work, so re-runs only evaluate), then runs one
`ragbatch eval --retrieval dense,bm25,hybrid` per set (questions embedded once) and
prints one Markdown row per set and mode:

- raydocs-real (174 real users' questions, 259 Ray doc pages) and raydocs-dev (132
  synthetic questions, 215 pages): page hit@k and section hit@k;
- squad-dev (4,961 questions, 24 articles): answer hit@k (a retrieved chunk of the
  right article contains a gold answer).

MRR is page level. Leave --sizes/--overlaps out to measure what a user gets with no options.

    python benchmarks/retrieval_sweep.py [--sets raydocs-real,raydocs-dev,squad-dev] [--sizes 254,128] [--overlaps 31]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "eval"
SETS = ("raydocs-real", "raydocs-dev", "squad-dev")
KS = "1,3,5,10,20"


def ragbatch(*args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--json"], capture_output=True, text=True)
    if result.returncode not in (0, 3):
        raise SystemExit(f"ragbatch {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def rate(rates: dict | None, k: int) -> str:
    value = (rates or {}).get(str(k))
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--sizes", default="", help="chunk sizes in tokens [default: the embedder's fit]")
    parser.add_argument("--overlaps", default="", help="chunk overlaps in tokens [default: size/8]")
    parser.add_argument("--modes", default="dense,bm25,hybrid")
    parser.add_argument("--work", default=str(ROOT / "stores" / "sweep"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] or [None]
    overlaps = [int(o) for o in args.overlaps.split(",") if o] or [None]

    print("| set | chunk size | overlap | chunks | mode | page hit@1 | @5 | @10 | @20 | section hit@5 | answer hit@1 | answer hit@5 | answer hit@10 | MRR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, overlap in itertools.product(sizes, overlaps):
        if size is not None and overlap is not None and overlap >= size:
            continue
        for name in args.sets.split(","):
            store = Path(args.work) / f"{name}-{size or 'default'}-{overlap if overlap is not None else 'default'}"
            options = (["--chunk-size", str(size)] if size else []) + (["--chunk-overlap", str(overlap)] if overlap is not None else [])
            report = ragbatch("index", str(EVAL / name / "corpus"), "--store", str(store), *options)
            manifest = json.loads((store / "manifest.json").read_text())
            summary = ragbatch("eval", str(EVAL / name / "questions.jsonl"), "--store", str(store), "--retrieval", args.modes, "--k", KS)
            modes = summary.get("modes") or {summary["retrieval"]: summary}
            for mode, s in modes.items():
                h, sh, a = s["hit_at"], s.get("section_hit_at"), s.get("answer_hit_at")
                print(
                    f"| {name} | {manifest['chunking']['chunk_size']} | {manifest['chunking']['chunk_overlap']} | {report['chunks']} | {mode} "
                    f"| {rate(h, 1)} | {rate(h, 5)} | {rate(h, 10)} | {rate(h, 20)} | {rate(sh, 5)} | {rate(a, 1)} | {rate(a, 5)} | {rate(a, 10)} | {s['mrr']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
