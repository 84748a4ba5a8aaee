"""`ragbatch ask --executor ray` on a local Ray (one machine): two vLLM replicas share the
questions, and an engine that cannot start stops the run in one line. The cluster tests
(test_ask_cluster.py) compare answers with a local run and kill the driver."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from helpers import FACTS, ragbatch_cli, write_questions
from ray_nodes import RAY_NOTICE

from ragbatch.errors import ParameterError
from ragbatch.generation.ray_generator import choose_executor, replica_resources


def test_auto_picks_ray_for_a_cluster_or_many_questions(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert (choose_executor("auto", 99_999), choose_executor("auto", 100_000), choose_executor("ray", 1)) == ("local", "ray", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert (choose_executor("auto", 5), choose_executor("local", 5)) == ("ray", "local")
    with pytest.raises(ParameterError):
        choose_executor("dask", 5)


class Setup:  # the two fields replica_resources reads
    def __init__(self, device, engine=None):
        self.device, self.engine = device, engine or {}


def test_one_replica_per_gpu_or_tensor_parallel_group_and_shared_cpus():
    assert replica_resources({"GPU": 8, "CPU": 64}, Setup("cuda"), None) == (8, {"num_gpus": 1, "num_cpus": 1}, None)
    assert replica_resources({"GPU": 8, "CPU": 64}, Setup("cuda", {"tensor_parallel_size": 2}), None)[:2] == (4, {"num_gpus": 2, "num_cpus": 1})
    assert replica_resources({"GPU": 8, "CPU": 64}, Setup("cuda"), 3)[0] == 3
    with pytest.raises(ParameterError, match="fewer than one engine's 4"):
        replica_resources({"GPU": 2}, Setup("cuda", {"tensor_parallel_size": 4}), None)
    # CPUs: the retrieval actor's half CPU aside, the replicas share the rest
    assert replica_resources({"CPU": 2}, Setup("cpu"), None) == (1, {"num_cpus": 1.0}, 2)
    assert replica_resources({"CPU": 2}, Setup("cpu"), 2) == (2, {"num_cpus": 0.75}, 1)
    assert replica_resources({"CPU": 16}, Setup("cpu"), 2) == (2, {"num_cpus": 1.0}, 8)


@pytest.mark.slow
def test_two_replicas_answer_every_question_once(freedonia_store, tmp_path):
    questions = write_questions(tmp_path / "q.jsonl", [{"id": f"f{i}", "question": f"{FACTS[i % len(FACTS)].split(' is ')[0]}?"} for i in range(10)])
    out = tmp_path / "a.parquet"
    done = ragbatch_cli("ask", questions, "--store", freedonia_store, "--out", out, "--executor", "ray", "--replicas", 2, "--max-tokens", 16, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["executor"], report["answered"], report["failed"]) == ("ray", 10, 0)
    rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == [f"f{i}" for i in range(10)]
    assert all(r["answer"] and r["sources"] and r["prompt_tokens"] > 0 for r in rows)


@pytest.mark.slow
def test_an_engine_that_cannot_start_stops_the_run_in_one_line(freedonia_store, tmp_path):
    questions = write_questions(tmp_path / "q.jsonl", [{"id": "1", "question": "Who was president of Freedonia?"}])
    out = tmp_path / "a.parquet"
    done = ragbatch_cli("ask", questions, "--store", freedonia_store, "--out", out, "--executor", "ray", "--vllm-arg", "quantization=awq", timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    *ray_notices, line = done.stderr.strip().splitlines()
    assert line.startswith("error: vLLM could not start smollm2-135m-instruct on ") and "\n" not in line, done.stderr
    assert all(RAY_NOTICE in notice for notice in ray_notices), done.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.faults
def test_a_replica_killed_mid_batch_is_restarted_and_every_id_answered_once(freedonia_store, tmp_path):
    """SIGKILL of the vLLM replica's process (as the OOM killer would) after its first rows
    reached the file: Ray restarts it, its batch runs again, the repeats are dropped."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT

    questions = write_questions(tmp_path / "q.jsonl", [{"id": f"k{i}", "question": f"Who was Freedonia's president, question {i}?"} for i in range(30)])
    out = tmp_path / "a.parquet"
    command = [sys.executable, str(ROOT / "cli.py"), "ask", str(questions), "--store", str(freedonia_store), "--out", str(out)]
    command += ["--executor", "ray", "--max-tokens", "48", "--part-rows", "2", "--json"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "a.parquet.parts"
    deadline = time.time() + 600
    while time.time() < deadline and driver.poll() is None and not list(parts.glob("part-*.parquet")):
        time.sleep(0.05)
    replica = subprocess.run(["pgrep", "-f", "MapBatches\\(_Answer\\)"], capture_output=True, text=True).stdout.split()
    assert replica and driver.poll() is None, "no replica running after the first part"
    for pid in replica:
        os.kill(int(pid), signal.SIGKILL)
    stdout, stderr = driver.communicate(timeout=900)
    assert driver.returncode == 0, stderr[-3000:]
    # Ray's raylet may print its own "A worker died..." notice on stdout: the report is the JSON line
    report = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    assert (report["answered"], report["failed"]) == (30, 0)
    assert pq.read_table(out).column("id").to_pylist() == [f"k{i}" for i in range(30)]
