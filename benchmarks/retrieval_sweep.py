"""Which chunking and retrieval mode retrieve best? Prints a Markdown table.

For every (chunk size, overlap) it indexes both evaluation sets with the embedded
default embedder (stores are kept under --work, so re-runs only evaluate), then runs
`ragbatch eval` for dense, bm25 and hybrid retrieval:
squad-dev: answer hit@k (a retrieved chunk of the right article contains a gold answer);
raydocs-dev: page-level and section-level source hit@k. MRR is page level.

    python benchmarks/retrieval_sweep.py [--sizes 254,128,64] [--overlaps 0,32]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "squad": ROOT.parent / "shared" / "eval" / "squad-dev",
    "raydocs": ROOT.parent / "shared" / "eval" / "raydocs-dev",
}


def ragbatch(*args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--json"], capture_output=True, text=True)
    if result.returncode not in (0, 3):
        raise SystemExit(f"ragbatch {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="254,128")
    parser.add_argument("--overlaps", default="0,32")
    parser.add_argument("--modes", default="dense,bm25,hybrid")
    parser.add_argument("--work", default=str(ROOT / "stores" / "sweep"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    overlaps = [int(o) for o in args.overlaps.split(",")]

    print("| chunk size | overlap | mode | squad chunks | squad answer hit@1 | @5 | @10 | squad MRR | raydocs chunks | raydocs page hit@1 | @5 | @10 | section hit@5 | raydocs MRR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, overlap in itertools.product(sizes, overlaps):
        if overlap >= size:
            continue
        chunks = {}
        for name, folder in SETS.items():
            store = Path(args.work) / f"{name}-{size}-{overlap}"
            chunks[name] = ragbatch("index", str(folder / "corpus"), "--store", str(store), "--chunk-size", str(size), "--chunk-overlap", str(overlap))["chunks"]
        for mode in args.modes.split(","):
            s = ragbatch("eval", str(SETS["squad"] / "questions.jsonl"), "--store", str(Path(args.work) / f"squad-{size}-{overlap}"), "--retrieval", mode, "--k", "1,5,10")
            r = ragbatch("eval", str(SETS["raydocs"] / "questions.jsonl"), "--store", str(Path(args.work) / f"raydocs-{size}-{overlap}"), "--retrieval", mode, "--k", "1,5,10")
            a, h, sh = s["answer_hit_at"], r["hit_at"], r["section_hit_at"]
            print(
                f"| {size} | {overlap} | {mode} | {chunks['squad']} | {a['1']:.3f} | {a['5']:.3f} | {a['10']:.3f} | {s['mrr']:.3f} "
                f"| {chunks['raydocs']} | {h['1']:.3f} | {h['5']:.3f} | {h['10']:.3f} | {sh['5']:.3f} | {r['mrr']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
