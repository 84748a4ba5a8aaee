"""`ragbatch ask --executor ray` on a real two-node Ray cluster (tests/ray_nodes.py): the
head has no CPUs, so retrieval and the vLLM replica (the CPU build, the packaged model)
run on the second node, which cannot see the questions' folder; the store is in a folder
it sees. The driver is a subprocess joined to the cluster by RAY_ADDRESS.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from helpers import ROOT, index, ragbatch_cli, write_questions
from ray_nodes import RAY_NOTICE, driver_env

pytestmark = pytest.mark.cluster

TOPICS = ["oranges Passepartout bought", "port the steamer reached", "installing Ray", "GPUs in Ray", "batch size for throughput"]


def questions(folder, name: str, count: int):
    rows = [{"id": f"q{i}", "question": f"What does the text say about {TOPICS[i % len(TOPICS)]} on day {i}?"} for i in range(count)]
    return write_questions(folder / name, rows)


@pytest.fixture(scope="module")
def store(cluster, tmp_path_factory):
    """The cluster input's store, in a folder both nodes see."""
    store = tmp_path_factory.mktemp("visible") / "store"
    index([cluster["docs"]], store)
    return store


def ask_on_cluster(cluster, *args, timeout=600) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "cli.py"), "ask", *map(str, args), "--executor", "ray"]
    return subprocess.run(command, env=driver_env(cluster["address"]), capture_output=True, text=True, timeout=timeout)


def by_id(path) -> dict[str, dict]:
    return {row["id"]: row for row in pq.read_table(path).to_pylist()}


def test_the_cluster_answers_as_a_local_run_does_and_a_rerun_answers_nothing(cluster, store, tmp_path):
    asked = questions(cluster["docs"], "same.jsonl", 12)  # invisible to the worker node
    out = tmp_path / "cluster.parquet"
    done = ask_on_cluster(cluster, asked, "--store", store, "--out", out, "--max-tokens", 24, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["executor"], report["answered"], report["failed"]) == ("ray", 12, 0)

    local = tmp_path / "local.parquet"
    here = ragbatch_cli("ask", asked, "--store", store, "--out", local, "--max-tokens", 24, "--executor", "local", "--json")
    assert here.returncode == 0, here.stderr[-3000:]
    on_cluster, on_driver = by_id(out), by_id(local)
    assert list(on_cluster) == list(on_driver) == [f"q{i}" for i in range(12)]
    for key, row in on_cluster.items():
        other = on_driver[key]
        assert (row["sources"], row["chunk_ids"], row["passages_used"], row["prompt_tokens"]) == (
            other["sources"],
            other["chunk_ids"],
            other["passages_used"],
            other["prompt_tokens"],
        )
        assert row["scores"] == pytest.approx(other["scores"], abs=1e-5)
    # The same prompts in the same batch; the replica's engine runs on the other node's
    # thread count, which may round differently (measured: 12 of 12 equal, README).
    same = sum(row["answer"] == on_driver[key]["answer"] for key, row in on_cluster.items())
    print(f"answers equal to a local run's: {same} of 12")
    assert same >= 9, f"only {same} of 12 answers equal a local run's"

    again = ask_on_cluster(cluster, asked, "--store", store, "--out", out, "--max-tokens", 24, "--resume", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (json.loads(again.stdout)["answered"], json.loads(again.stdout)["skipped"]) == (0, 12)
    assert by_id(out) == on_cluster


def test_a_killed_driver_loses_only_unwritten_rows_and_a_rerun_gives_every_id_once(cluster, store, tmp_path):
    # Answers of very different lengths, so the first parts come long before the last
    # answers (answers of one length finish together, and a kill then lands in the merge).
    rows = [
        {
            "id": f"q{i}",
            "question": "Answer yes or no: did Passepartout buy oranges?" if i % 2 else f"Describe at length every day of the journal, from day {i}.",
        }
        for i in range(40)
    ]
    asked = write_questions(cluster["docs"] / "killed.jsonl", rows)
    out = tmp_path / "killed.parquet"
    parts = tmp_path / "killed.parquet.parts"
    command = [sys.executable, str(ROOT / "cli.py"), "ask", str(asked), "--store", str(store), "--out", str(out), "--executor", "ray"]
    command += ["--max-tokens", "96", "--part-rows", "2"]
    driver = subprocess.Popen(command, env=driver_env(cluster["address"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and driver.poll() is None and not list(parts.glob("part-*.parquet")):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = list(parts.glob("part-*.parquet"))
    assert written and not out.exists(), "the run was not killed part way"
    kept = [i for f in written for i in pq.read_table(f).column("id").to_pylist()]
    assert 0 < len(kept) < 40 and len(set(kept)) == len(kept)

    rerun = ask_on_cluster(cluster, asked, "--store", store, "--out", out, "--max-tokens", 96, "--resume", "--json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout)
    assert (report["skipped"], report["answered"]) == (len(kept), 40 - len(kept))
    assert pq.read_table(out).column("id").to_pylist() == [f"q{i}" for i in range(40)] and not parts.exists()


def test_a_store_the_workers_cannot_see_stops_the_run_in_one_line(cluster, tmp_path):
    if not cluster["hidden"]:
        pytest.skip("no mount namespace here (unshare -m not permitted): the worker node sees every folder")
    hidden = cluster["docs"] / "stores" / "hidden"  # made after the worker hid the folder
    index([cluster["docs"] / "journal.txt"], hidden)
    asked = questions(tmp_path, "q.jsonl", 3)
    done = ask_on_cluster(cluster, asked, "--store", hidden, "--out", tmp_path / "a.parquet")
    assert done.returncode == 1
    *ray_notices, line = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {hidden}: not visible on ") and "ragbatch publish" in line, done.stderr
    assert all(RAY_NOTICE in notice for notice in ray_notices), done.stderr
    assert not (tmp_path / "a.parquet").exists()
