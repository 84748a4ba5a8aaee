"""How far to trust synthetic questions: retrieval hit@5 on `ragbatch synth` questions
against the real questions' figure, on the same store.

For each set (squad-dev, raydocs-dev): index its corpus into stores/bench-<set> (kept and
reused), write --n synthetic questions with `synth` (outputs/synth-<set>-<n>.jsonl, kept),
then `eval` both question files with the default retrieval.

    python benchmarks/synth_vs_real.py [--sets squad-dev,raydocs-dev] [--n 100] [--llm MODEL]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="squad-dev,raydocs-dev")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--llm")
    args = parser.parse_args()

    import ragbatch

    print(f"machine: {platform.machine()}; synth with {args.llm or 'the packaged model'}; {time.strftime('%Y-%m-%d')}")
    for name in args.sets.split(","):
        store = ROOT / "stores" / f"bench-{name}"
        if not (store / "manifest.json").exists():
            ragbatch.index([str(EVAL / name / "corpus")], store)
        questions = ROOT / "outputs" / f"synth-{name}-{args.n}.jsonl"
        questions.parent.mkdir(exist_ok=True)
        if not questions.exists():
            started = time.perf_counter()
            report = ragbatch.synth(store, n=args.n, out=questions, llm=args.llm)
            print(
                f"{name}: synth wrote {report.written} of {report.wanted} "
                f"(unparsed {report.unparsed}, repeated {report.duplicates}, copied {report.copied}) in {time.perf_counter() - started:.0f} s"
            )
        real = ragbatch.evaluate(str(EVAL / name / "questions.jsonl"), store, ks=[1, 5]).summary
        synthetic = ragbatch.evaluate(str(questions), store, ks=[1, 5]).summary
        for label, summary in (("real", real), ("synthetic", synthetic)):
            hits = summary["hit_at"]
            print(f"  {name:12s} {label:9s} questions {summary['scored']:5d}  page hit@1 {hits[1]:.3f}  hit@5 {hits[5]:.3f}  MRR {summary['mrr']:.3f}")
        print(f"  {name:12s} synthetic/real page hit@5: {synthetic['hit_at'][5] / real['hit_at'][5]:.3f}")


if __name__ == "__main__":
    main()
