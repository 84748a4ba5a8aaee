"""`ragbatch ask` on the real vLLM CPU build and the packaged SmolLM2.

Bad invocations fail before any model loads, so most error tests are quick; the
generation tests load vLLM once per `ask` call."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from fake_hub import FakeHub
from helpers import ROOT, write_questions
from helpers import ragbatch_cli as ragbatch

from ragbatch.asking.answer_file import BASE_COLUMNS, RUN_METADATA
from ragbatch.generation.rows import citations
from ragbatch.store.records import unpack


@pytest.fixture(scope="module")
def store(freedonia_store):
    return freedonia_store


@pytest.mark.slow
def test_ask_writes_every_column_with_exact_counts_and_per_row_errors(store, tmp_path):
    from transformers import AutoTokenizer

    from ragbatch.generation.prompting import build_prompt
    from ragbatch.models.weights import resolve_llm

    questions = write_questions(
        tmp_path / "q.jsonl",
        [
            {"id": "capital", "question": "What is the capital of Freedonia?", "topic": "geo"},
            {"id": "president", "question": "Who was the president of Freedonia in 1933?", "topic": "politics"},
            {"id": "huge", "question": "Why? " * 3000, "topic": "too long for the context window"},
        ],
    )
    out = tmp_path / "answers.parquet"
    # As a user online runs it (no HF_HUB_OFFLINE): packaged models must still ask no hub.
    online = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, "HF_HOME": str(tmp_path / "hf-home")}
    with FakeHub({}) as hub:
        result = ragbatch(
            "ask",
            questions,
            "--store",
            store,
            "--out",
            out,
            "--k",
            2,
            "--max-tokens",
            24,
            "--max-model-len",
            2048,
            "--price-prompt",
            1.0,
            "--price-completion",
            2.0,
            "--count-tokens",
            "cl100k_base",
            "--vllm-arg",
            "max_num_seqs=8",
            "--json",
            env={**online, "HF_ENDPOINT": hub.url},
        )
    assert result.returncode == 3, result.stderr  # done, but a row failed (README's exit codes)
    assert "1 of 3 questions failed" in result.stderr
    assert hub.requests == []
    report = json.loads(result.stdout)
    assert (report["questions"], report["answered"], report["failed"], report["skipped"]) == (3, 2, 1, 0)
    assert report["store"] == str(store)

    table = pq.read_table(out)
    assert table.schema.names[: len(BASE_COLUMNS)] == [n for n, _ in BASE_COLUMNS]
    run = json.loads(table.schema.metadata[RUN_METADATA])
    assert run["engine"] == {"max_num_seqs": 8} and run["k"] == 2 and run["llm"] == "smollm2-135m-instruct" and run["device"] == "cpu"
    assert {"prompt_tokens_cl100k_base", "completion_tokens_cl100k_base", "topic"} <= set(table.schema.names)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert list(rows) == ["capital", "president", "huge"]  # input order
    assert "Zubrowka" in rows["capital"]["answer"]
    assert rows["capital"]["sources"][0] == "freedonia.txt#L1"  # cited with the line of the fact
    tokenizer = AutoTokenizer.from_pretrained(resolve_llm(None))
    for qid in ("capital", "president"):
        row = rows[qid]
        assert row["error"] is None and row["finish_reason"] in ("stop", "length")
        assert len(row["sources"]) == 2 and len(row["chunk_ids"]) == 2 and len(row["scores"]) == 2
        assert all(re.fullmatch(r"freedonia\.txt#L[1-4]", source) for source in row["sources"]) and row["scores"][0] >= row["scores"][1]
        assert 0 < row["completion_tokens"] <= 24 and row["prompt_tokens_cl100k_base"] > 0
        # Exact: the prompt sent is the one build_prompt renders for the retrieved passages.
        texts = [t for t in _chunk_texts(store, row["chunk_ids"])]
        prompt = build_prompt(tokenizer, row["question"], texts, 2048, 24)
        assert row["prompt_tokens"] == len(prompt.token_ids)
        assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 1.0 + row["completion_tokens"] * 2.0) / 1e6)
        assert row["llm"] == "smollm2-135m-instruct" and row["embedder"] == "all-MiniLM-L6-v2"
        # Citations are the answer's [n] markers read against the passages the prompt held.
        assert (row["citations"], row["citations_dropped"]) == citations(row["answer"], row["sources"][: row["passages_used"]])
    assert rows["huge"]["error"].startswith("prompt too long") and rows["huge"]["answer"] is None
    assert report["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows.values())


def _chunk_texts(store, ids):
    import chromadb

    client = chromadb.PersistentClient(path=str(store / "chroma"))
    got = client.get_collection("chunks").get(ids=list(ids), include=["documents", "metadatas"])
    client.close()
    by_id = {i: unpack(d, m)[0] for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
    return [by_id[i] for i in ids]


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_finished_ids(store, tmp_path):
    questions = write_questions(
        tmp_path / "q.jsonl",
        [{"id": f"q{i}", "question": f"What is fact number {i} about {['Zubrowka', 'brodo', 'Firefly', 'Trentino'][i % 4]}?"} for i in range(40)],
    )
    out = tmp_path / "a.parquet"
    parts = tmp_path / "a.parquet.parts"
    args = [
        sys.executable,
        str(ROOT / "cli.py"),
        "ask",
        str(questions),
        "--store",
        str(store),
        "--out",
        str(out),
        "--k",
        "1",
        "--max-tokens",
        "48",
        "--part-rows",
        "2",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None and not list(parts.glob("part-*.parquet")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = list(parts.glob("part-*.parquet"))
    assert written and not out.exists(), "the run was not interrupted part way"
    done = {i for f in written for i in pq.read_table(f).column("id").to_pylist()}
    assert 0 < len(done) < 40

    without = ragbatch("ask", questions, "--store", store, "--out", out)
    assert without.returncode == 1 and "interrupted run" in without.stderr

    resumed = ragbatch("ask", questions, "--store", store, "--out", out, "--k", 1, "--max-tokens", 48, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["skipped"] == len(done) and report["answered"] == 40 - len(done)
    ids = pq.read_table(out).column("id").to_pylist()
    assert ids == [f"q{i}" for i in range(40)] and not parts.exists()


@pytest.mark.slow
def test_search_json_lists_ranked_passages(store, tmp_path):
    result = ragbatch("search", "What is the national dish?", "--store", store, "--k", 2, "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["store"] == str(store) and found["retrieval"] == "hybrid"
    hits = found["results"]
    assert [h["rank"] for h in hits] == [1, 2] and set(hits[0]) == {"rank", "source", "chunk_id", "score", "text"}
    assert "brodo" in hits[0]["text"]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: d.joinpath("q.jsonl").write_text(""), ["{d}/q.jsonl"], "no questions (empty file)"),
        (lambda d: None, ["{d}/none.jsonl"], "none.jsonl: no such file"),
        (lambda d: d.joinpath("q.txt").write_text("Why?\n"), ["{d}/q.txt", "--store", "{d}/nostore"], "nostore: no such store"),
        (lambda d: (d / "empty-store").mkdir(), ["{d}/q.txt", "--store", "{d}/empty-store"], "not a ragbatch store (no manifest.json)"),
        (lambda d: d.joinpath("q.txt").write_text("Why?\n"), ["{d}/q.txt", "--out", "/proc/answers.parquet"], "cannot write there"),
        (lambda d: None, ["{d}/q.txt", "--vllm-arg", "max_num_seq=8"], "--vllm-arg max_num_seq: not a vLLM engine argument; did you mean max_num_seqs?"),
        (lambda d: d.joinpath("q.txt").write_text("Why?\n"), ["{d}/q.txt", "--llm", "no-such/model"], "--llm no-such/model: cannot be loaded offline"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_a_nonzero_exit(store, tmp_path, setup, args, message):
    setup(tmp_path)
    (tmp_path / "q.txt").exists() or (tmp_path / "q.txt").write_text("Why?\n")
    args = [a.replace("{d}", str(tmp_path)) for a in args]
    if "--store" not in args:
        args += ["--store", str(store)]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "a.parquet")]
    result = ragbatch("ask", *args)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_bad_question_lines_are_named_and_skipped_and_the_rest_answered(store, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "ok", "question": "What is the capital of Freedonia?"}\n{bad json\n{"q": "x"}\n{"question": "Trunc')
    result = ragbatch("ask", questions, "--store", store, "--out", tmp_path / "a.parquet", "--k", 1, "--max-tokens", 8, "--json")
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {questions}:2: not valid JSON: Expecting property name enclosed in double quotes: column 2 (skipped)",
        f'error: {questions}:3: missing or empty "question" field (skipped)',
        f"error: {questions}:4: not valid JSON: Unterminated string starting at: column 14 (skipped)",
    ]
    assert json.loads(result.stdout)["errors"] == [e.removeprefix("error: ").removesuffix(" (skipped)") for e in errors]
    assert pq.read_table(tmp_path / "a.parquet").column("id").to_pylist() == ["ok"]


def test_existing_out_is_never_truncated(store, tmp_path):
    out = tmp_path / "a.parquet"
    out.write_bytes(b"precious earlier answers")
    (tmp_path / "q.txt").write_text("What is the capital of Freedonia?\n")
    result = ragbatch("ask", tmp_path / "q.txt", "--store", store, "--out", out)
    assert result.returncode == 1 and "already exists; pass --resume" in result.stderr
    assert out.read_bytes() == b"precious earlier answers"
