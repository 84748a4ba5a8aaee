"""`ragbatch ask` throughput against bare vLLM, from one run on this machine.

1. Index ../shared/eval/squad-dev/corpus (kept under stores/bench-squad; reused).
2. Retrieval alone: embed N questions and query the store in one batch -> questions/s.
3. `ragbatch ask` over the same N questions, as a user runs it (new process) ->
   its generation tokens/s and its whole wall time.
4. Bare `LLM.generate` of exactly the prompts that run sent (rebuilt from the chunk
   ids in its Parquet output), same model and settings, one call -> tokens/s.

Prints the ratio bare / ragbatch for generation tokens/s (target <= 1.1).

    python benchmarks/ask_bench.py [--questions 200] [--max-tokens 64]
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
        started = time.perf_counter()
        result = subprocess.run(
            [*cli, "ask", str(qfile), "--store", str(store), "--out", str(out), "--k", str(args.k), "--max-tokens", str(args.max_tokens), "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        report = json.loads(result.stdout)
        bare_tps, bare_tokens = bare_generate(store, out, args.max_tokens)

    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"questions: {len(questions)} (squad-dev), k={args.k}, max tokens {args.max_tokens}, retrieval {report.get('retrieval', 'hybrid')}")
    print(f"retrieval: {retrieval_qps:.1f} questions/s (embed + hybrid top-{args.k}, one batch)")
    print(f"ragbatch ask generation: {report['tokens_per_second']:.1f} tokens/s ({report['completion_tokens']} completion tokens)")
    print(
        f"bare LLM.generate:       {bare_tps:.1f} tokens/s ({bare_tokens} completion tokens)  ratio bare/ragbatch {bare_tps / report['tokens_per_second']:.3f} (target <= 1.1)"
    )
    print(f"ragbatch ask wall time:  {wall:.1f} s for {len(questions)} questions ({report['prompt_tokens']} prompt tokens)")


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

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0)
    started = time.perf_counter()
    outputs = generator._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    generator.close()
    return tokens / seconds, tokens


if __name__ == "__main__":
    main()
