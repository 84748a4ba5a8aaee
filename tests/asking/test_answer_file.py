"""Answer files: schema, parts written as rows finish, resume, never truncating OUT."""

import pyarrow.parquet as pq
import pytest

from ragbatch.asking.answer_file import BASE_COLUMNS, AnswerWriter, answer_schema, carry_values
from ragbatch.errors import RagbatchError
from ragbatch.generation.pricing import Price, load_prices, price_for

QUESTIONS = [{"id": "1", "question": "Q1?", "answers": ["a"], "tag": 1}, {"id": "2", "question": "Q2?", "answers": ["b"], "error": "x"}]


def row(qid, schema):
    q = next(q for q in QUESTIONS if q["id"] == qid)
    return {
        "id": qid,
        "question": q["question"],
        "answer": f"answer {qid}",
        "sources": ["s.txt"],
        "chunk_ids": ["c"],
        "scores": [0.5],
        "passages_used": 1,
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "cost_usd": 0.0,
        "llm": "m",
        "embedder": "e",
        "finish_reason": "stop",
        "error": None,
        **carry_values(q, schema),
    }


def test_schema_has_base_columns_then_carried_fields_renamed_on_clash():
    schema = answer_schema(QUESTIONS, "cl100k_base")
    names = schema.names
    assert names[: len(BASE_COLUMNS)] == [n for n, _ in BASE_COLUMNS]
    assert names[len(BASE_COLUMNS) :] == ["prompt_tokens_cl100k_base", "completion_tokens_cl100k_base", "answers", "tag", "input_error"]
    assert str(schema.field("sources").type) == "list<item: string>" and str(schema.field("answers").type) == "list<item: string>"


def test_parts_then_finish_in_input_order(tmp_path):
    out = tmp_path / "answers.parquet"
    schema = answer_schema(QUESTIONS, None)
    writer = AnswerWriter(out, schema, mode="new")
    writer.write([row("2", schema)])  # finished first
    assert len(list((tmp_path / "answers.parquet.parts").glob("part-*.parquet"))) == 1 and not out.exists()
    writer.write([row("1", schema)])
    assert writer.finish(order=["1", "2"]) == (2, 0)
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["1", "2"] and table.column("input_error").to_pylist() == [None, "x"]
    assert not (tmp_path / "answers.parquet.parts").exists()


def test_resume_skips_answered_ids_from_out_and_from_leftover_parts(tmp_path):
    out = tmp_path / "a.parquet"
    schema = answer_schema(QUESTIONS, None)
    first = AnswerWriter(out, schema, mode="new")
    first.write([row("1", schema)])
    first.finish(order=["1", "2"])
    with pytest.raises(RagbatchError, match="already exists; pass resume"):
        AnswerWriter(out, schema, mode="new")
    crashed = AnswerWriter(out, schema, mode="resume")
    crashed.write([row("2", schema)])
    crashed.close()  # the process dies: no finish(), and the OS drops its lock
    resumed = AnswerWriter(out, schema, mode="resume")
    assert resumed.done_ids() == {"1", "2"}
    assert resumed.finish(order=["1", "2"]) == (2, 0)
    assert pq.read_table(out).column("id").to_pylist() == ["1", "2"]


def test_crash_between_merge_and_parts_removal_gives_no_duplicates(tmp_path):
    out = tmp_path / "a.parquet"
    schema = answer_schema(QUESTIONS, None)
    writer = AnswerWriter(out, schema, mode="new")
    writer.write([row("1", schema)])
    parts = sorted((tmp_path / "a.parquet.parts").glob("part-*"))
    saved = [(p.name, p.read_bytes()) for p in parts]
    writer.finish(order=["1", "2"])
    (tmp_path / "a.parquet.parts").mkdir()  # as if the process died after os.replace, before rmtree
    for name, data in saved:
        (tmp_path / "a.parquet.parts" / name).write_bytes(data)
    resumed = AnswerWriter(out, schema, mode="resume")
    resumed.write([row("2", schema)])
    assert resumed.finish(order=["1", "2"]) == (2, 0)
    assert pq.read_table(out).column("id").to_pylist() == ["1", "2"]


def test_failed_rows_are_retried_on_resume_and_replaced(tmp_path):
    out = tmp_path / "a.parquet"
    schema = answer_schema(QUESTIONS, None)
    first = AnswerWriter(out, schema, mode="new")
    first.write([row("1", schema), {**row("2", schema), "answer": None, "error": "prompt too long"}])
    first.finish(order=["1", "2"])
    again = AnswerWriter(out, schema, mode="resume")
    assert again.done_ids() == {"1"}  # the failed row is not done
    again.write([row("2", schema)])
    assert again.finish(order=["1", "2"]) == (2, 0)
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["1", "2"] and table.column("error").to_pylist() == [None, None]


def test_second_writer_on_one_out_is_refused_and_overwrite_replaces_only_at_finish(tmp_path):
    out = tmp_path / "a.parquet"
    schema = answer_schema(QUESTIONS, None)
    first = AnswerWriter(out, schema, mode="resume")
    with pytest.raises(RagbatchError, match="another `ragbatch ask` is writing this file"):
        AnswerWriter(out, schema, mode="resume")
    first.write([row("1", schema), row("2", schema)])
    first.finish(order=["1", "2"])
    over = AnswerWriter(out, schema, mode="overwrite")  # the lock was released by finish
    assert over.done_ids() == set()
    over.write([{**row("2", schema), "answer": "new"}])
    assert pq.read_table(out).num_rows == 2  # untouched until the new run finishes
    assert over.finish(order=["1", "2"]) == (1, 0)
    assert pq.read_table(out).column("answer").to_pylist() == ["new"]


def test_leftover_parts_without_resume_are_refused(tmp_path):
    schema = answer_schema(QUESTIONS, None)
    crashed = AnswerWriter(tmp_path / "b.parquet", schema, mode="new")
    crashed.write([row("1", schema)])
    crashed.close()  # crashed before finish
    with pytest.raises(RagbatchError, match="left by an interrupted run; pass resume"):
        AnswerWriter(tmp_path / "b.parquet", schema, mode="new")


def test_unwritable_out_is_refused_before_any_work(tmp_path):
    with pytest.raises(RagbatchError, match="does not exist"):
        AnswerWriter(tmp_path / "no" / "dir" / "a.parquet", answer_schema(QUESTIONS, None), mode="new")
    with pytest.raises(RagbatchError, match="cannot write there"):  # even root cannot create files in /proc
        AnswerWriter("/proc/ragbatch-answers.parquet", answer_schema(QUESTIONS, None), mode="new")


def test_prices_from_files_and_options(tmp_path):
    assert price_for("any-local-model") == Price(0.0, 0.0)
    (tmp_path / "p.toml").write_text('[models."gpt-x"]\nprompt = 2.5\ncompletion = 10\n[default]\nprompt = 1\n')
    table = load_prices(tmp_path / "p.toml")
    assert price_for("gpt-x", table) == Price(2.5, 10.0)
    assert price_for("other", table) == Price(1.0, 0.0)
    assert price_for("gpt-x", table, completion=4.0) == Price(2.5, 4.0)
    assert Price(2.5, 10.0).cost(1000, 100) == pytest.approx(0.0035)
    (tmp_path / "p.json").write_text('{"models": {"m": {"prompt": 0.5}}}')
    assert price_for("m", load_prices(tmp_path / "p.json")) == Price(0.5, 0.0)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(RagbatchError, match="not valid JSON"):
        load_prices(tmp_path / "bad.json")


def test_a_resumed_file_holds_exactly_the_inputs_questions(tmp_path):
    """Rows of questions no longer in the input are dropped, and counted."""
    out = tmp_path / "a.parquet"
    schema = answer_schema(QUESTIONS, None)
    first = AnswerWriter(out, schema, mode="new")
    first.write([row("1", schema), row("2", schema)])
    assert first.finish(order=["1", "2"]) == (2, 0)
    resumed = AnswerWriter(out, schema, mode="resume")
    assert resumed.finish(order=["2"]) == (1, 1)  # question 1 left the input
    assert pq.read_table(out).column("id").to_pylist() == ["2"]


def test_default_answer_files_are_named_by_the_whole_input_name(tmp_path):
    from ragbatch.locations import default_answers

    assert default_answers("q.txt", ["a"]) != default_answers("q.csv", ["a"])
    assert default_answers("dir/q.txt", ["a"]).name == "q.txt-answers.parquet"
    # stdin: the same questions find their file again; other questions get another
    assert default_answers("-", ["a", "b"]) == default_answers("-", ["b", "a"]) != default_answers("-", ["a", "c"])
    assert default_answers("-", ["a"]).name.startswith("stdin-")
