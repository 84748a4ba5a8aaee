"""`ragbatch judge` for real: the packaged model in vLLM's CPU build rates answers of a
real `ask` run (groundedness from the store's chunks) and of a plain JSONL; every verdict
is valid, a rerun judges nothing, a killed run resumes with every id once, and bad input
gets one line."""

import json
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from helpers import ROOT, ragbatch_cli, write_questions

import ragbatch

pytestmark = pytest.mark.slow

QUESTIONS = [
    {"id": "capital", "question": "What is the capital of Freedonia?", "reference_answer": "Zubrowka, a city on the river Vel."},
    {"id": "dish", "question": "What is Freedonia's national dish?", "reference_answer": "Brodo, a stew of lentils."},
    {"id": "president", "question": "Who was the president of Freedonia in 1933?", "reference_answer": "Rufus T. Firefly."},
]


@pytest.fixture(scope="module")
def answers(freedonia_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge")
    report = ragbatch.ask(str(write_questions(folder / "q.jsonl", QUESTIONS)), freedonia_store, out=folder / "q.parquet", k=2, max_tokens=40)
    assert report.answered == 3
    return folder / "q.parquet"


def test_judge_rates_an_ask_file_on_every_aspect_and_a_rerun_judges_nothing(answers, tmp_path):
    first = ragbatch_cli("judge", answers, "--json", "--max-model-len", "2048", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["judged"] == 3 and report["unparsed"] == 0 and report["failed"] == 0
    out = tmp_path / "outputs" / "q-judged.parquet"
    assert report["out"].endswith("outputs/q-judged.parquet")
    rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == ["capital", "dish", "president"]
    for row in rows:
        assert row["quality"] in range(1, 6) and row["relevance"] in range(1, 6), row
        assert 1 <= row["quality_expected"] <= 5 and len(row["quality_reason"]) <= 240
        # The store the ask file records gave the passages: every sentence got a verdict.
        assert row["sentences_judged"] >= 1 and 0 <= row["groundedness"] <= 1
        assert len(row["unsupported"]) == round((1 - row["groundedness"]) * row["sentences_judged"])
        assert row["reference_answer"] and row["sources"]  # the input's columns come along
        assert row["judge_prompt_tokens"] > 0 and row["error"] is None
    summary = report["summary"]
    assert summary["by"] == "llm" and summary["quality_rated"] == 3
    assert summary["quality_mean"] == pytest.approx(sum(r["quality"] for r in rows) / 3, abs=1e-4)
    assert sum(summary["quality_histogram"].values()) == 3

    again = ragbatch_cli("judge", answers, "--json", "--max-model-len", "2048", "--report", tmp_path / "j.html", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["judged"] == 0 and "3 of 3 answers already judged" in again.stderr
    assert "<svg" in (tmp_path / "j.html").read_text()
    changed = ragbatch_cli("judge", answers, "--aspects", "relevance", "--max-model-len", "2048", cwd=tmp_path)
    assert (
        changed.returncode == 1
        and """its verdicts were made with other settings (--aspects ["quality", "relevance", "groundedness"], now ["relevance"])""" in changed.stderr
    )


def test_a_killed_judge_run_resumes_with_every_id_once(tmp_path):
    rows = [
        {
            "id": f"r{i}",
            "system": "ab"[i % 2],
            "question": f"How many oranges did Passepartout buy on day {i}?",
            "reference_answer": f"{i} oranges.",
            "answer": f"He bought {i + i % 3} oranges.",
        }
        for i in range(24)
    ]
    file = write_questions(tmp_path / "rated.jsonl", rows)
    out = tmp_path / "v.parquet"
    args = [sys.executable, str(ROOT / "cli.py"), "judge", str(file), "--out", str(out), "--aspects", "quality", "--part-rows", "2", "--max-model-len", "2048"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = tmp_path / "v.parquet.parts"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None and not list(parts.glob("part-*.parquet")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(parts.glob("part-*.parquet")), "the run finished or failed before its first part"

    resumed = ragbatch_cli("judge", file, "--out", out, "--aspects", "quality", "--resume", "--json", "--max-model-len", "2048")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert 0 < report["skipped"] < 24 and report["judged"] == 24 - report["skipped"]
    table = pq.read_table(out)
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    assert all(q in range(1, 6) for q in table.column("quality").to_pylist())
    assert report["summary"]["by"] == "system" and set(report["summary"]["groups"]) == {"a", "b"}
    assert not parts.exists()


def test_bad_input_gets_one_line_naming_the_file(tmp_path):
    no_answers = write_questions(tmp_path / "plain.jsonl", [{"question": "Where is Etna?"}])
    result = ragbatch_cli("judge", no_answers, "--out", tmp_path / "v.parquet")
    assert result.returncode == 1 and result.stderr.strip() == f'error: {no_answers}: no row has an "answer" to judge'
    missing = ragbatch_cli("judge", tmp_path / "nope.jsonl")
    assert missing.returncode == 1 and "nope.jsonl: no such file" in missing.stderr and "Traceback" not in missing.stderr
    aspects = ragbatch_cli("judge", no_answers, "--aspects", "beauty")
    assert aspects.returncode != 0 and "--aspects" in aspects.stderr


def test_citing_sentences_are_checked_against_the_passages_they_cite(tmp_path):
    passages = ["The capital of Freedonia is Zubrowka, a city on the river Vel.", "Freedonia's national dish is a stew of lentils called brodo."]
    rows = [
        {"id": "c1", "question": "What is the capital of Freedonia?", "answer": "Zubrowka [1]. It lies on the Vel [1].", "passages": passages},
        {"id": "c2", "question": "What do Freedonians eat?", "answer": "Brodo, a lentil stew [2]. It is eaten at Easter [2].", "passages": passages},
    ]
    file = write_questions(tmp_path / "cited.jsonl", rows)
    result = ragbatch_cli("judge", file, "--out", tmp_path / "v.parquet", "--aspects", "groundedness", "--json", "--max-model-len", "2048")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unparsed"] == 0 and report["summary"]["citations_checked"] == 4
    for row in pq.read_table(tmp_path / "v.parquet").to_pylist():
        assert row["citations_checked"] == 2 and row["citations_supported"] + len(row["unsupported_citations"]) == 2
        assert row["sentences_judged"] == 2 and row["quality"] is None and row["relevance"] is None


def test_judge_on_ray_replicas_gives_the_local_verdicts(answers, tmp_path):
    """--executor ray: prompts built here (the context window read from the model's
    config), verdicts generated on a vLLM replica of a local Ray, rows written here."""
    verdicts = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"{executor}.parquet"
        done = ragbatch_cli("judge", answers, "--aspects", "quality,relevance", "--out", out, "--max-model-len", "2048", "--executor", executor, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["judged"] == 3
        verdicts[executor] = [(r["id"], r["judge_prompt_tokens"], r["quality"], r["relevance"]) for r in pq.read_table(out).to_pylist()]
    local, ray = verdicts["local"], verdicts["ray"]
    assert [v[:2] for v in ray] == [v[:2] for v in local]  # the same prompts, built here
    # generated in another process, whose bf16 sums may round differently (equal when measured)
    assert sum(a == b for a, b in zip(ray, local)) >= 2, (local, ray)
