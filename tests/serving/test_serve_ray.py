"""`ragbatch serve --replicas 2`: the same app as a Ray Serve deployment, over real HTTP.

Starts a private local Ray cluster (never `ray stop`: other Rays on the machine are not ours),
two replicas each with its own embedder and vLLM engine: a minute or more on 2 cores."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from helpers import CAPITAL, ROOT, free_port

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow


def test_replicas_serve_the_same_app_behind_one_port(tmp_path, freedonia_store):
    store = freedonia_store
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RAGBATCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    log = tmp_path / "server.log"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--store", str(store), "--port", str(port), "--replicas", "2", "--max-model-len", "2048"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        env=env,
    )
    try:
        while "2 Ray Serve replicas" not in log.read_text():  # said once every replica is running
            assert proc.poll() is None, log.read_text()
            time.sleep(1)
        print(f"Ray Serve, 2 replicas: ready {time.perf_counter() - started:.0f} s after start")
        assert log.read_text().strip().splitlines()[-1].startswith(f"serving {store} on http://127.0.0.1:{port} with 2 Ray Serve replicas")
        pids = {httpx.get(f"{url}/health", timeout=60).json()["pid"] for _ in range(30)}
        assert len(pids) == 2 and proc.pid not in pids  # two replica processes answer, not the CLI's
        answer = httpx.post(f"{url}/ask", json={"question": CAPITAL, "k": 2, "max_tokens": 24}, timeout=600).json()
        assert answer["sources"][0] == "freedonia.txt#L1" and len(answer["sources"]) == 2 and answer["completion_tokens"] > 0 and answer["answer"]
        from openai import OpenAI

        chat = OpenAI(base_url=f"{url}/v1", api_key="unused").chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": CAPITAL}], max_tokens=24, extra_body={"k": 2}
        )
        assert chat.choices[0].message.content == answer["answer"]  # greedy, same prompt: same answer on either replica
        bad = httpx.post(f"{url}/ask", json={"question": CAPITAL, "k": 0}, timeout=60)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "k"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
