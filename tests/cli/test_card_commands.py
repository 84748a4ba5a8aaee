"""The two commands the README opens with, verbatim, in a folder holding just their two files:
`ragbatch index around.txt` and `ragbatch ask questions.jsonl`, with no options."""

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import ROOT
from helpers import ragbatch_cli as ragbatch

from ragbatch.cli import main

QUESTIONS = [
    {"id": "home", "question": "Where did Phileas Fogg live?"},
    {"id": "club", "question": "Which club was Phileas Fogg a member of?"},
]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """around.txt (its first 120 paragraphs, to keep the test quick) and questions.jsonl."""
    monkeypatch.delenv("RAGBATCH_STORE", raising=False)
    lines = (ROOT / "corpora" / "around.txt").read_text(encoding="utf-8-sig").splitlines()[:120]
    (tmp_path / "around.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return tmp_path


def answered_ids(folder: Path) -> list[str]:
    return pq.read_table(folder / "outputs" / "questions.jsonl-answers.parquet").column("id").to_pylist()


@pytest.mark.slow
def test_bare_index_and_ask_then_reruns_answer_only_what_is_new(folder):
    index = ragbatch("index", "around.txt", "--json", cwd=folder)
    assert index.returncode == 0, index.stderr
    report = json.loads(index.stdout)
    assert report["store"] == str(Path("stores") / "default") and report["chunks"] > 0
    assert (folder / "stores" / "default" / "manifest.json").is_file()

    first = ragbatch("ask", "questions.jsonl", "--max-tokens", 16, "--json", cwd=folder)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["out"] == str(Path("outputs") / "questions.jsonl-answers.parquet") and report["store"] == str(Path("stores") / "default")
    assert report["answered"] == 2 and answered_ids(folder) == ["home", "club"]

    second = ragbatch("ask", "questions.jsonl", "--max-tokens", 16, "--json", cwd=folder)
    assert second.returncode == 0, second.stderr
    nothing = json.loads(second.stdout)
    assert (nothing["answered"], nothing["skipped"]) == (0, 2)
    assert (nothing["llm"], nothing["embedder"]) == ("smollm2-135m-instruct", "all-MiniLM-L6-v2")  # named though nothing ran
    assert "2 of 2 questions already answered; nothing to do (--overwrite starts over)" in second.stderr
    other = ragbatch("ask", "questions.jsonl", "--max-tokens", 32, "--retrieval", "dense", cwd=folder)
    assert other.returncode == 1 and "--retrieval 'hybrid', now 'dense'" in other.stderr and "--max-tokens 16, now 32" in other.stderr

    with open(folder / "questions.jsonl", "a") as fh:
        fh.write(json.dumps({"question": "What was the name of Fogg's servant?"}) + "\n")
    third = ragbatch("ask", "questions.jsonl", "--max-tokens", 16, "--json", cwd=folder)
    assert third.returncode == 0, third.stderr
    assert (json.loads(third.stdout)["answered"], json.loads(third.stdout)["skipped"]) == (1, 2)
    assert "2 of 3 questions already answered; answering the other 1" in third.stderr
    ids = answered_ids(folder)
    assert ids[:2] == ["home", "club"] and len(ids) == 3 and ids[2].startswith("q-")

    # Questions taken out of the file take their rows with them: one row per question of the input.
    (folder / "questions.jsonl").write_text(json.dumps(QUESTIONS[0]) + "\n")
    fewer = ragbatch("ask", "questions.jsonl", "--max-tokens", 16, "--json", cwd=folder)
    assert fewer.returncode == 0 and json.loads(fewer.stdout)["dropped"] == 2 and answered_ids(folder) == ["home"]
    assert "dropped 2 answers to questions no longer in questions.jsonl" in fewer.stderr
    # The same name with another extension is another file of answers, not a mix of two sets.
    (folder / "questions.txt").write_text(QUESTIONS[1]["question"] + "\n")
    txt = ragbatch("ask", "questions.txt", "--max-tokens", 16, "--json", cwd=folder)
    assert json.loads(txt.stdout)["out"] == str(Path("outputs") / "questions.txt-answers.parquet") and answered_ids(folder) == ["home"]

    # An explicit --out that exists is still refused without --resume, and left as it was.
    before = (folder / "outputs" / "questions.jsonl-answers.parquet").read_bytes()
    refused = ragbatch("ask", "questions.jsonl", "--out", "outputs/questions.jsonl-answers.parquet", cwd=folder)
    assert refused.returncode == 1 and "already exists; pass --resume" in refused.stderr
    assert (folder / "outputs" / "questions.jsonl-answers.parquet").read_bytes() == before


@pytest.mark.slow
def test_ragbatch_store_names_the_default_store(folder):
    env = {**os.environ, "RAGBATCH_STORE": str(folder / "elsewhere")}
    index = ragbatch("index", "around.txt", "--json", cwd=folder, env=env)
    assert index.returncode == 0, index.stderr
    assert json.loads(index.stdout)["store"] == str(folder / "elsewhere")
    assert (folder / "elsewhere" / "manifest.json").is_file() and not (folder / "stores").exists()
    search = ragbatch("search", "Saville Row", "--retrieval", "bm25", "--json", cwd=folder, env=env)
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)["store"] == str(folder / "elsewhere")


@pytest.mark.parametrize("command", [["search", "Who is Fogg?"], ["eval", "questions.jsonl"], ["ask", "questions.jsonl"]])
def test_commands_on_a_store_not_made_yet_say_how_to_make_it(folder, monkeypatch, command):
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {Path('stores') / 'default'}: no such store yet; create it with `ragbatch index FILES`"]
    assert not (folder / "stores").exists()


def test_overwrite_and_resume_together_is_a_usage_error(folder, monkeypatch):
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(main, ["ask", "questions.jsonl", "--resume", "--overwrite"])
    assert result.exit_code == 2 and "not both" in result.output
