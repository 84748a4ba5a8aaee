"""`ragbatch serve` under N concurrent clients against batch `ask` over the same questions.

1. Index ../shared/eval/squad-dev/corpus (kept under stores/bench-squad; reused).
2. Start `ragbatch serve` on a free port (a new process, as a user runs it; start-up timed).
3. For each N in --clients (1, 8, 32): N clients each send --per-client /ask requests one
   after the other (a distinct squad question each) -> requests/s, p50/p99 latency,
   completion tokens/s, and the most requests the engine ran in one step.
4. Stop the server; run batch `ask` in this process over the questions the largest N sent,
   same k, max tokens and engine: questions/s over retrieval + generation (its model load
   excluded, as the server's is), and its completion tokens (greedy: the same answers).

Prints the ratio serve/ask at the largest N (target >= 0.7), and per N the latency
percentiles (p50/p95/p99) and the errors by HTTP status.

    python benchmarks/serve_bench.py [--clients 1,8,32,128] [--per-client 2] [--k 3] [--max-tokens 48]
    python benchmarks/serve_bench.py --startup    # one process against Ray Serve (1 replica)
    python benchmarks/serve_bench.py --soak 600   # 10 minutes of load past the server's limits

The soak starts a server with --max-concurrency 8 --max-queue 8 and runs 24 clients for
SECONDS: each sends /ask (a third of them streamed and dropped after the first token, as
a client that goes away), backing off for Retry-After on a 429. Every 30 s it samples
the server's and its engine process's RSS and open file descriptors; at the end it prints
the samples, the answers, the 429s and any other error (the target: none).
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

    latencies, tokens, errors = [], 0, {}
    queue = list(questions)

    async def client(http):
        nonlocal tokens
        while queue:
            question = queue.pop()
            started = time.perf_counter()
            response = await http.post("/ask", json={"question": question, "k": k, "max_tokens": max_tokens})
            if response.status_code != 200:
                errors[response.status_code] = errors.get(response.status_code, 0) + 1
                continue
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
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "errors": errors,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
    }


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def process_usage(pid: int) -> tuple[float, int, dict[str, float]]:
    """(RSS in MB, open file descriptors) of `pid` and its children (vLLM's engine core),
    and the RSS of each process by its name."""
    rss, fds, each = 0.0, 0, {}
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            mine = int(re.search(r"^VmRSS:\s+(\d+)", status, flags=re.M).group(1)) / 1024
            name = Path(f"/proc/{current}/comm").read_text().strip()
            rss += mine
            each[f"{name}[{current}]"] = mine
            fds += len(os.listdir(f"/proc/{current}/fd"))
            pids += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return rss, fds, each


async def soak(url: str, pid: int, pool: list[str], seconds: float, clients: int, k: int, max_tokens: int) -> None:
    import random

    import httpx

    counts: dict[str, int] = {}
    samples = [(0.0, *process_usage(pid))]
    deadline = time.perf_counter() + seconds
    rng = random.Random(0)

    def count(what: str) -> None:
        counts[what] = counts.get(what, 0) + 1

    async def client(http):
        while time.perf_counter() < deadline:
            body = {"question": rng.choice(pool), "k": k, "max_tokens": max_tokens}
            try:
                if rng.random() < 1 / 3:  # streamed, and dropped after the first token
                    async with http.stream("POST", "/ask", json={**body, "stream": True}) as response:
                        if response.status_code == 200:
                            async for line in response.aiter_lines():
                                if line == "event: token":
                                    break
                            count("dropped mid-stream")
                        else:
                            count(f"HTTP {response.status_code}")
                            await asyncio.sleep(float(response.headers.get("retry-after", 1)))
                    continue
                response = await http.post("/ask", json=body)
                count("answered" if response.status_code == 200 else f"HTTP {response.status_code}")
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("retry-after", 1)))
            except httpx.HTTPError as exc:
                count(type(exc).__name__)

    async def sampler():
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            await asyncio.sleep(30)
            samples.append((time.perf_counter() - started, *process_usage(pid)))

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(sampler(), *[client(http) for _ in range(clients)])
    await asyncio.sleep(5)  # aborts settle
    samples.append((seconds + 5, *process_usage(pid)))
    for at, rss, fds, each in samples:
        parts = ", ".join(f"{name} {mb:.0f}" for name, mb in each.items())
        print(f"soak t={at:5.0f} s: RSS {rss:7.0f} MB (server + engine: {parts}), {fds:4d} open file descriptors")
    print(f"soak: {clients} clients for {seconds:.0f} s against --max-concurrency 8 --max-queue 8: {counts}")
    print(f"engine requests still unfinished after the soak: {unfinished(url):.0f}")


def unfinished(url: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^ragbatch_engine_unfinished_requests (\S+)$", text, flags=re.M).group(1))


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
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--per-client", type=int, default=2, help="Requests each client sends, one after the other.")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--startup", action="store_true", help="Only compare start-up: one process (uvicorn) against Ray Serve with 1 replica.")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="Only run the soak (see above) for this long.")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    cli = [sys.executable, str(ROOT / "cli.py")]
    store = ROOT / "stores" / "bench-squad"
    subprocess.run([*cli, "index", str(SQUAD / "corpus"), "--store", str(store), "--json"], check=True, capture_output=True)

    pool = [json.loads(line)["question"] for line in (SQUAD / "questions.jsonl").read_text().splitlines()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; squad-dev, k={args.k}, max tokens {args.max_tokens}, temperature 0, hybrid retrieval")

    if args.startup:
        return compare_startup(cli, store)
    if args.soak:
        with tempfile.TemporaryDirectory() as tmp:
            proc, url, _ = start_server(cli, store, Path(tmp) / "server.log", "--max-concurrency", "8", "--max-queue", "8")
            try:
                asyncio.run(soak(url, proc.pid, pool, args.soak, 24, args.k, args.max_tokens))
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=300)
        return
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
                    f"p50 {r['p50']:5.2f} s  p95 {r['p95']:5.2f} s  p99 {r['p99']:5.2f} s  errors {r['errors'] or 'none'}  "
                    f"{r['tokens_per_s']:6.1f} completion tokens/s  (engine ran up to {engine_max_running(url):.0f} at once so far)"
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
