"""`ragbatch ask` throughput against bare vLLM, from one run on this machine.

1. Index ../shared/eval/squad-dev/corpus (kept under stores/bench-squad; reused).
2. Retrieval alone: embed N questions and query the store in one batch -> questions/s.
3. `ragbatch ask` over the same N questions, as a user runs it (new process) ->
   its generation tokens/s and its whole wall time.
4. Bare `LLM.generate` of exactly the prompts that run sent (rebuilt from the chunk
   ids in its Parquet output), same model and settings, one call -> tokens/s.

Prints the ratio bare / ragbatch for generation tokens/s (target <= 1.05): ask's figure
counts from its first prompt built (prompts are built while the engine runs), bare
vLLM's from the call with every prompt ready.

5. With --ray: the same questions through `ask --executor ray` (a local Ray, one vLLM
   replica) and `--replicas 2`: wall times against the local run's, and how many
   answers equal the local run's. On a machine of few cores two replicas compete for
   them: the figure is the scaling rule there, not a speed-up.

    python benchmarks/ask_bench.py [--questions 200] [--max-tokens 64] [--ray]
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
SQUAD = ROOT.parent / "shared" / "eval" / "squad-dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--ray", action="store_true", help="also time ask --executor ray with 1 and 2 replicas")
    args = parser.parse_args()
    cli = [sys.executable, str(ROOT / "cli.py")]
    store = ROOT / "stores" / "bench-squad"
    subprocess.run([*cli, "index", str(SQUAD / "corpus"), "--store", str(store), "--json"], check=True, capture_output=True)

    questions = [json.loads(line) for line in (SQUAD / "questions.jsonl").read_text().splitlines()[: args.questions]]
    with tempfile.TemporaryDirectory() as tmp:
        qfile = Path(tmp) / "q.jsonl"
        qfile.write_text("".join(json.dumps({"id": q["id"], "question": q["question"]}) + "\n" for q in questions))

        from ragbatch.retrieval.retriever import Retriever
        from ragbatch.retrieval.selection import Selection

        retriever = Retriever.open(store)
        retriever.search(["warm-up question"], Selection(k=args.k))
        started = time.perf_counter()
        retriever.search([q["question"] for q in questions], Selection(k=args.k))
        retrieval_qps = len(questions) / (time.perf_counter() - started)
        retriever.close()
        del retriever

        out = Path(tmp) / "answers.parquet"
        ask = [*cli, "ask", str(qfile), "--store", str(store), "--k", str(args.k), "--max-tokens", str(args.max_tokens), "--json"]
        report, wall = timed(ask + ["--out", str(out), "--executor", "local"])
        bare_tps, bare_tokens = bare_generate(store, out, args.max_tokens)
        on_ray = []
        if args.ray:
            for replicas in (1, 2):
                ray_out = Path(tmp) / f"ray-{replicas}.parquet"
                ray_report, ray_wall = timed(ask + ["--out", str(ray_out), "--executor", "ray", "--replicas", str(replicas)])
                on_ray.append((replicas, ray_report, ray_wall, same_answers(out, ray_out)))

    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"questions: {len(questions)} (squad-dev), k={args.k}, max tokens {args.max_tokens}, retrieval {report.get('retrieval', 'hybrid')}")
    print(f"retrieval: {retrieval_qps:.1f} questions/s (embed + hybrid top-{args.k}, one batch)")
    print(f"ragbatch ask generation: {report['tokens_per_second']:.1f} tokens/s ({report['completion_tokens']} completion tokens)")
    print(
        f"bare LLM.generate:       {bare_tps:.1f} tokens/s ({bare_tokens} completion tokens)  ratio bare/ragbatch {bare_tps / report['tokens_per_second']:.3f} (target <= 1.05)"
    )
    print(f"ragbatch ask wall time:  {wall:.1f} s for {len(questions)} questions ({report['prompt_tokens']} prompt tokens)")
    for replicas, ray_report, ray_wall, same in on_ray:
        print(
            f"ask --executor ray, {replicas} replica{'s' if replicas > 1 else ''}: wall {ray_wall:.1f} s, ray/local {ray_wall / wall:.3f}; "
            f"{ray_report['completion_tokens']} completion tokens; answers equal to local: {same} of {len(questions)}"
        )
    if len(on_ray) == 2:
        print(f"2 replicas / 1 replica wall: {on_ray[1][2] / on_ray[0][2]:.3f} (on {os.cpu_count()} cores the replicas share them)")


def timed(command: list[str]) -> tuple[dict, float]:
    """An ask run's --json report and its wall time, in a fresh process as a user runs it."""
    started = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout), time.perf_counter() - started


def same_answers(one: Path, other: Path) -> int:
    import pyarrow.parquet as pq

    first = {r["id"]: r["answer"] for r in pq.read_table(one, columns=["id", "answer"]).to_pylist()}
    return sum(first.get(r["id"]) == r["answer"] for r in pq.read_table(other, columns=["id", "answer"]).to_pylist())


def bare_generate(store: Path, answers: Path, max_tokens: int) -> tuple[float, int]:
    """tokens/s of one plain LLM.generate over the prompts `ask` sent."""
    import chromadb
    import pyarrow.parquet as pq

    from ragbatch.generation.batch import Generator
    from ragbatch.generation.prompting import build_prompt
    from ragbatch.models.weights import DEFAULT_LLM, resolve_llm
    from ragbatch.store.records import unpack

    rows = [r for r in pq.read_table(answers).to_pylist() if r["error"] is None]
    client = chromadb.PersistentClient(path=str(store / "chroma"))
    collection = client.get_collection("chunks")
    generator = Generator(resolve_llm(None), name=DEFAULT_LLM)
    prompts = []
    for row in rows:
        got = collection.get(ids=row["chunk_ids"], include=["documents", "metadatas"])
        text = {i: unpack(d, m)[0] for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
        prompts.append(build_prompt(generator.tokenizer, row["question"], [text[i] for i in row["chunk_ids"]], generator.context_window, max_tokens).token_ids)
    client.close()
    assert [len(p) for p in prompts] == [r["prompt_tokens"] for r in rows], "rebuilt prompts differ from those ask sent"

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)  # no per-request seed, as ask without --seed
    started = time.perf_counter()
    outputs = generator._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    generator.close()
    return tokens / seconds, tokens


if __name__ == "__main__":
    main()
