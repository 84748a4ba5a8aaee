"""A resumed answers file keeps one set of settings: a run with others is refused, before
any model loads, naming what changed."""

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import CAPITAL, write_questions

import ragbatch
from ragbatch.asking.answer_file import RUN_METADATA, AnswerWriter, answer_schema
from ragbatch.asking.pipeline import AskOptions, answer_settings
from ragbatch.cli import main
from ragbatch.errors import RagbatchError
from ragbatch.generation.rows import base_row
from ragbatch.generation.settings import read_inputs
from ragbatch.retrieval.selection import Selection

QUESTIONS = [{"id": "capital", "question": CAPITAL}]


@pytest.fixture
def answered(tmp_path, freedonia_store):
    """An answers file as `ask` over QUESTIONS with its defaults leaves it (the row itself
    does not matter here, the recorded settings do)."""
    questions = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    out = tmp_path / "answers.parquet"
    options = AskOptions(str(questions), freedonia_store, out)
    run = answer_settings(options, read_inputs(options.generation), "all-MiniLM-L6-v2")
    writer = AnswerWriter(out, answer_schema(QUESTIONS, None), mode="new")
    writer.write([{**base_row(QUESTIONS[0], [], run["llm"], run["embedder"]), "answer": "Zubrowka.", "finish_reason": "stop"}])
    writer.finish(order=["capital"], run=run)
    return questions, out, freedonia_store


def test_other_settings_are_refused_naming_each(answered):
    questions, out, store = answered
    before = out.read_bytes()
    with pytest.raises(RagbatchError) as refused:
        ragbatch.ask(str(questions), store, out=out, resume=True, k=2, max_tokens=16, retrieval="dense")
    message = str(refused.value)
    assert "its answers were made with other settings" in message
    assert "retrieval 'hybrid', now 'dense'" in message and "k 5, now 2" in message and "max_tokens 128, now 16" in message
    assert out.read_bytes() == before  # nothing written
    cli = CliRunner().invoke(main, ["ask", str(questions), "--store", str(store), "--out", str(out), "--resume", "--k", "2"])
    assert cli.exit_code == 1 and "--k 5, now 2" in cli.stderr and "use --overwrite to start over, or another --out" in cli.stderr


def test_the_same_settings_resume_and_the_file_records_them(answered):
    questions, out, store = answered
    metadata = json.loads(pq.read_schema(out).metadata[RUN_METADATA])
    assert metadata["store"] == str(store.absolute()) and metadata["where"] == [] and metadata["system_prompt"]
    report = ragbatch.ask(str(questions), store, out=out, resume=True)  # nothing to answer: no model loads
    assert report.answered == 0 and report.skipped == 1
    assert (report.llm, report.embedder) == ("smollm2-135m-instruct", "all-MiniLM-L6-v2")  # named though nothing ran


def test_a_filter_or_a_prompt_is_a_setting_too(answered):
    questions, out, store = answered
    with pytest.raises(RagbatchError, match=r"where \[\], now \[\"source=freedonia.txt\"\]"):
        ragbatch.ask(str(questions), store, out=out, resume=True, selection=Selection(chunk_filter=Selection().chunk_filter.parse(["source=freedonia.txt"])))
    with pytest.raises(RagbatchError, match="system_prompt"):
        ragbatch.ask(str(questions), store, out=out, resume=True, system_prompt="Answer in French.")


def test_no_seed_is_recorded_as_none_and_an_older_files_seed_0_means_the_same(answered, tmp_path):
    questions, out, store = answered
    assert json.loads(pq.read_schema(out).metadata[RUN_METADATA])["seed"] is None  # no per-request seed
    # A file from before seeds were optional recorded 0 for "no --seed": it resumes.
    older = tmp_path / "older.parquet"
    table = pq.read_table(out)
    run = {**json.loads(table.schema.metadata[RUN_METADATA]), "seed": 0}
    pq.write_table(table.replace_schema_metadata({RUN_METADATA: json.dumps(run)}), older)
    assert ragbatch.ask(str(questions), store, out=older, resume=True).skipped == 1
    with pytest.raises(RagbatchError, match="seed 0, now 5"):
        ragbatch.ask(str(questions), store, out=older, resume=True, seed=5)
