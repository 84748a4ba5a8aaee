"""How far a judge agrees with GPT-4 on ../shared/eval/judge-dev (61 Ray-docs questions x 12 systems).

Runs `ragbatch judge` (quality only: every row has GPT-4's reference answer) over the 732
rows, then prints, for the judge's integer score and for its expected score (the score
weighted by its own probabilities of 1-5):

- row level: Spearman correlation with `gpt4_score`, mean absolute difference, share within 1 point;
- system level: Kendall tau between the judge's mean per system and GPT-4's (what a user
  relies on to pick a configuration), and both means per system.

    python benchmarks/judge_agreement.py [--judge MODEL] [--questions N] [--max-model-len 4096]

The verdicts go to outputs/judge-agreement-<judge>.parquet and resume: a rerun after a kill
judges only what is missing. Targets for a 7-8B open judge on a GPU: tau >= 0.8, Spearman >= 0.6.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "eval" / "judge-dev" / "judged.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", help="Judge model [default: the packaged one].")
    parser.add_argument("--questions", type=int, help="Only the first N questions (all 12 systems' answers to each).")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    import ragbatch
    from ragbatch.models.weights import DEFAULT_LLM

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    if args.questions:
        keep = list(dict.fromkeys(r["question"] for r in rows))[: args.questions]
        rows = [r for r in rows if r["question"] in set(keep)]
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", args.judge or DEFAULT_LLM)
    out = ROOT / "outputs" / f"judge-agreement-{name}{'-q' + str(args.questions) if args.questions else ''}.parquet"
    out.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "judge-dev.jsonl"
        file.write_text("".join(json.dumps({k: r[k] for k in ("id", "system", "question", "reference_answer", "answer")}) + "\n" for r in rows))
        started = time.perf_counter()
        report = ragbatch.judge(str(file), judge=args.judge, out=out, resume=True, aspects=("quality",), max_model_len=args.max_model_len)
        seconds = time.perf_counter() - started
    verdicts = {r["id"]: r for r in report.table().to_pylist()}

    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; judge {report.judge}; {time.strftime('%Y-%m-%d')}")
    print(f"{len(rows)} rows ({len({r['system'] for r in rows})} systems), judged now {report.judged} in {seconds:.0f} s, ", end="")
    print(f"asked again {report.retried}, unparsed {report.unparsed}, failed {report.failed}")
    for key in ("quality", "quality_expected"):
        print(f"\n{key}:")
        agreement(rows, verdicts, key)


def agreement(rows: list[dict], verdicts: dict, key: str) -> None:
    from scipy.stats import kendalltau, spearmanr

    pairs = [(r["gpt4_score"], verdicts[r["id"]][key], r["system"]) for r in rows if verdicts.get(r["id"], {}).get(key) is not None]
    if len(pairs) < 3:
        print("  too few scores")
        return
    gpt4, ours, systems = zip(*pairs)
    rho = spearmanr(gpt4, ours).statistic
    mad = sum(abs(a - b) for a, b in zip(gpt4, ours)) / len(pairs)
    within = sum(abs(a - b) <= 1 for a, b in zip(gpt4, ours)) / len(pairs)
    means: dict[str, tuple[list, list]] = {}
    for a, b, system in pairs:
        means.setdefault(system, ([], []))[0].append(a)
        means[system][1].append(b)
    names = sorted(means)
    gpt4_means = [sum(means[s][0]) / len(means[s][0]) for s in names]
    our_means = [sum(means[s][1]) / len(means[s][1]) for s in names]
    tau = kendalltau(gpt4_means, our_means).statistic
    print(f"  rows scored {len(pairs)}: Spearman {rho:.3f}, mean |difference| {mad:.2f}, within 1 point {within:.3f}")
    print(f"  systems {len(names)}: Kendall tau {tau:.3f}")
    for s, a, b in sorted(zip(names, gpt4_means, our_means), key=lambda t: -t[1]):
        print(f"    {s:45s} gpt-4 {a:.2f}  judge {b:.2f}")


if __name__ == "__main__":
    main()
