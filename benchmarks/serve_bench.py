"""`ragbatch serve` under N concurrent clients against batch `ask` over the same questions.

1. Index ../shared/eval/squad-dev/corpus (kept under stores/bench-squad; reused).
2. Start `ragbatch serve` on a free port (a new process, as a user runs it; start-up timed).
3. For each N in --clients (1, 8, 32): N clients each send --per-client /ask requests one
   after the other (a distinct squad question each) -> requests/s, p50/p99 latency,
   completion tokens/s, and the most requests the engine ran in one step.
4. Stop the server; run batch `ask` in this process over the questions the largest N sent,
   same k, max tokens and engine: questions/s over retrieval + generation (its model load
   excluded, as the server's is), and its completion tokens (greedy: the same answers).

Prints the ratio serve/ask at the largest N (target >= 0.7).

    python benchmarks/serve_bench.py [--clients 1,8,32] [--per-client 2] [--k 3] [--max-tokens 48]
    python benchmarks/serve_bench.py --startup    # one process against Ray Serve (1 replica)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "eval" / "squad-dev"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cli: list[str], store: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str, float]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen([*cli, "serve", "--store", str(store), "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.5)


async def run_clients(url: str, questions: list[str], clients: int, k: int, max_tokens: int) -> dict:
    import httpx

    latencies, tokens = [], 0
    queue = list(questions)

    async def client(http):
        nonlocal tokens
        while queue:
            question = queue.pop()
            started = time.perf_counter()
            response = await http.post("/ask", json={"question": question, "k": k, "max_tokens": max_tokens})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            tokens += response.json()["completion_tokens"]

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "wall": wall,
        "rps": len(latencies) / wall,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
    }


def engine_max_running(url: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^ragbatch_engine_max_running_requests (\S+)$", text, flags=re.M).group(1))


def batch_ask(store: Path, questions: list[str], k: int, max_tokens: int) -> dict:
    """`ask` in this process: its report times retrieval + model load + generation; the
    retrieval alone is timed beside it the way ask runs it (one batch), so the model load
    can be left out as it is for the warm server."""
    import ragbatch
    from ragbatch.retrieval.retriever import Retriever
    from ragbatch.retrieval.selection import Selection

    retriever = Retriever.open(store)
    retriever.search(["warm-up question"], Selection(k=k))
    started = time.perf_counter()
    retriever.search(questions, Selection(k=k))
    retrieval = time.perf_counter() - started
    retriever.close()
    with tempfile.TemporaryDirectory() as tmp:
        qfile = Path(tmp) / "q.jsonl"
        qfile.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
        report = ragbatch.ask(str(qfile), store=store, out=Path(tmp) / "a.parquet", k=k, max_tokens=max_tokens)
    busy = retrieval + report.generation_seconds
    return {"questions": len(questions), "wall": report.seconds, "busy": busy, "rps": len(questions) / busy, "tokens": report.completion_tokens}


def compare_startup(cli: list[str], store: Path) -> None:
    """Seconds from process start to /health answering, one process against Ray Serve, alternated."""
    import httpx

    for mode, extra in (("uvicorn, one process", ()), ("Ray Serve, 1 replica", ("--replicas", "1"))) * 2:
        with tempfile.TemporaryDirectory() as tmp:
            proc, url, startup = start_server(cli, store, Path(tmp) / "server.log", *extra)
            started = time.perf_counter()
            httpx.post(f"{url}/ask", json={"question": "Which NFL team won Super Bowl 50?", "k": 3, "max_tokens": 16}, timeout=600).raise_for_status()
            first = time.perf_counter() - started
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)
        print(f"start-up {mode:<22} {startup:6.1f} s to /health, first /ask {first:5.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--per-client", type=int, default=2, help="Requests each client sends, one after the other.")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--startup", action="store_true", help="Only compare start-up: one process (uvicorn) against Ray Serve with 1 replica.")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    cli = [sys.executable, str(ROOT / "cli.py")]
    store = ROOT / "stores" / "bench-squad"
    subprocess.run([*cli, "index", str(SQUAD / "corpus"), "--store", str(store), "--json"], check=True, capture_output=True)

    pool = [json.loads(line)["question"] for line in (SQUAD / "questions.jsonl").read_text().splitlines()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; squad-dev, k={args.k}, max tokens {args.max_tokens}, temperature 0, hybrid retrieval")

    if args.startup:
        return compare_startup(cli, store)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, startup = start_server(cli, store, Path(tmp) / "server.log")
        print(f"serve start-up (process start to /health answering): {startup:.1f} s")
        try:
            asyncio.run(run_clients(url, pool[-4:], 2, args.k, args.max_tokens))  # warm-up, questions not used below
            offset, results = 0, {}
            for clients in levels:
                questions = pool[offset : offset + clients * args.per_client]
                offset += len(questions)
                r = results[clients] = {**asyncio.run(run_clients(url, questions, clients, args.k, args.max_tokens)), "questions": questions}
                print(
                    f"serve, {clients:>2} clients: {r['requests']:>3} requests in {r['wall']:6.1f} s  {r['rps']:5.2f} req/s  "
                    f"p50 {r['p50']:5.2f} s  p99 {r['p99']:5.2f} s  {r['tokens_per_s']:6.1f} completion tokens/s  "
                    f"(engine ran up to {engine_max_running(url):.0f} at once so far)"
                )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)

    top = results[max(levels)]
    batch = batch_ask(store, top["questions"], args.k, args.max_tokens)
    print(
        f"batch ask, same {batch['questions']} questions: {batch['rps']:5.2f} questions/s over retrieval + generation ({batch['busy']:.1f} s; "
        f"{batch['wall']:.1f} s with its model load), {batch['tokens'] / batch['busy']:6.1f} completion tokens/s"
    )
    print(f"completion tokens: serve {top['tokens']}, ask {batch['tokens']} (greedy: equal when the answers are)")
    print(f"serve/ask throughput at {max(levels)} clients: {top['rps'] / batch['rps']:.2f} (target >= 0.7)")


if __name__ == "__main__":
    main()
