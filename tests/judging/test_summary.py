"""Where references and passages come from, and what a verdict file's summary says."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ragbatch.errors import ParameterError
from ragbatch.judging.inputs import attach, chunk_ids_of, reference_of
from ragbatch.judging.report import render
from ragbatch.judging.summary import summarize


def test_the_reference_is_the_reference_answer_else_a_carried_gold_answer_else_the_gold_strings():
    assert reference_of({"reference_answer": "R", "input_answer": "I"}) == "R"
    assert reference_of({"input_answer": "I", "answers": ["a"]}) == "I"
    assert reference_of({"answers": ["c5", "", "1...c5"]}) == "c5 / 1...c5"
    assert reference_of({"answers": []}) is None and reference_of({}) is None


def test_passages_are_given_or_read_by_chunk_id_up_to_those_the_prompt_used():
    assert chunk_ids_of({"chunk_ids": ["a", "b", "c"], "passages_used": 2}) == ["a", "b"]
    assert chunk_ids_of({"chunk_ids": ["a", "b"], "passages_used": 0}) == ["a", "b"]
    rows = [{"id": "1", "chunk_ids": ["a", "b"], "passages_used": 1}, {"id": "2", "passages": ["given"]}, {"id": "3"}]
    asked = []

    def texts(ids):
        asked.append(ids)
        return {"a": "text a", "b": "text b"}

    judged = attach(rows, texts)
    assert asked == [["a"]]
    assert [j.passages for j in judged] == [["text a"], ["given"], None]
    assert attach(rows[:1], None)[0].passages is None


def write(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_the_summary_gives_means_shares_groundedness_and_groups(tmp_path):
    def row(i, system, quality, relevance, groundedness, sentences, error=None):
        reason = "ok" if quality else None
        fields = {"quality": quality, "quality_reason": reason, "relevance": relevance, "groundedness": groundedness, "sentences_judged": sentences}
        return {"id": str(i), "question": "q", "answer": "a", "system": system, **fields, "error": error}

    rows = [row(1, "big", 5, 5, 1.0, 2), row(2, "big", 4, 4, 0.5, 2), row(3, "small", 1, 2, None, None), row(4, "small", None, None, None, None, "x")]
    summary = summarize(write(tmp_path / "v.parquet", rows))
    assert summary.by == "system"
    overall = summary.overall
    assert overall.quality_mean == pytest.approx(10 / 3) and overall.quality_good == pytest.approx(2 / 3)
    assert overall.groundedness == pytest.approx(3 / 4) and overall.sentences_judged == 4 and overall.failed == 1
    assert summary.groups["big"].quality_mean == 4.5 and summary.groups["small"].quality_mean == 1
    assert summary.histogram == {5: 1, 4: 1, 1: 1}
    page = render(summary, rows, "v")
    assert "<svg" in page and '<td class="l">small</td>' in page and "no" in page
    with pytest.raises(ParameterError, match="not a column"):
        summarize(tmp_path / "v.parquet", by="nope")


def test_a_resumed_verdict_file_drops_answers_no_longer_in_the_input_and_says_so(tmp_path):
    """As `ask` does with its answers: one file, one input; nothing is judged, no model loads."""
    import json

    import ragbatch
    from ragbatch.asking.answer_file import AnswerWriter, answer_schema
    from ragbatch.judging.verdicts import VERDICT_COLUMNS

    rows = [{"id": i, "question": f"q{i}", "answer": f"a{i}"} for i in ("a", "b", "c")]
    out = tmp_path / "v.parquet"
    writer = AnswerWriter(out, answer_schema(rows, None, VERDICT_COLUMNS, passed=frozenset({"answer"})), mode="new", command="judge")
    writer.write([{**row, "relevance": 4} for row in rows])
    writer.finish(order=["a", "b", "c"])
    file = tmp_path / "two.jsonl"
    file.write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))
    heard = []
    report = ragbatch.judge(str(file), out=out, resume=True, aspects=("relevance",), notify=heard.append)
    assert (report.judged, report.skipped, report.dropped) == (0, 2, 1)
    assert heard[-1] == f"{out}: dropped 1 verdicts of answers no longer in {file}"
    assert pq.read_table(out).column("id").to_pylist() == ["a", "b"]
