"""Question files: every format, ids, carried fields, and errors naming file and line."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ragbatch.asking.questions import read_questions, text_id
from ragbatch.errors import InputFileError, RagbatchError


def test_jsonl_with_and_without_ids_carries_other_fields(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "question": " Who? ", "source": "x.txt"}\n\n{"question": "Why?", "answers": ["because"]}\n{"id": 7, "question": "When?"}\n')
    qs = read_questions(str(f))
    assert qs == [
        {"id": "a", "question": "Who?", "source": "x.txt"},
        {"id": text_id("Why?"), "question": "Why?", "answers": ["because"]},  # id from its text
        {"id": "7", "question": "When?"},
    ]


def test_csv_parquet_and_text(tmp_path):
    (tmp_path / "q.csv").write_text('id,question,topic\n1,"What, exactly?",x\n2,Where?,y\n')
    assert read_questions(str(tmp_path / "q.csv")) == [
        {"id": "1", "question": "What, exactly?", "topic": "x"},
        {"id": "2", "question": "Where?", "topic": "y"},
    ]
    pq.write_table(pa.table({"question": ["One?", "Two?"], "n": [1, 2]}), tmp_path / "q.parquet")
    assert read_questions(str(tmp_path / "q.parquet")) == [
        {"id": text_id("One?"), "question": "One?", "n": 1},
        {"id": text_id("Two?"), "question": "Two?", "n": 2},
    ]
    (tmp_path / "q.txt").write_text("First question?\n\nSecond question?\n")
    assert [q["id"] for q in read_questions(str(tmp_path / "q.txt"))] == [text_id("First question?"), text_id("Second question?")]


def test_ids_from_text_survive_edits_and_repeats_get_suffixes(tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("Who?\nWhy?\nWho?\n")
    before = {q["question"]: q["id"] for q in read_questions(str(f))[:2]}
    assert [q["id"] for q in read_questions(str(f))] == [text_id("Who?"), text_id("Why?"), text_id("Who?") + "-2"]
    f.write_text("A new first question?\nWho?\nWhy?\n")  # lines moved: ids did not
    assert {q["question"]: q["id"] for q in read_questions(str(f))[1:]} == before
    assert text_id("Who?").startswith("q-") and len(text_id("Who?")) == 18


def test_stdin_jsonl_and_text(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"question": "Q1?"}\n'))
    assert read_questions("-") == [{"id": text_id("Q1?"), "question": "Q1?"}]
    monkeypatch.setattr("sys.stdin", io.StringIO("Plain question?\n"))
    assert read_questions("-") == [{"id": text_id("Plain question?"), "question": "Plain question?"}]


@pytest.mark.parametrize(
    "content, where, message",
    [
        ('{"question": "ok?"}\n{"question": broken}\n', "q.jsonl:2", "not valid JSON"),
        ('{"question": "ok?"}\n{"text": "no question"}\n', "q.jsonl:2", 'missing or empty "question"'),
        ('{"question": ""}\n', "q.jsonl:1", 'missing or empty "question"'),
        ('["a list"]\n', "q.jsonl:1", "expected a JSON object"),
        ('{"id": "x", "question": "a?"}\n{"id": "x", "question": "b?"}\n', "q.jsonl:2", "duplicate id 'x' (first on line 1)"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, content, where, message):
    (tmp_path / "q.jsonl").write_text(content)
    with pytest.raises(InputFileError) as err:
        read_questions(str(tmp_path / "q.jsonl"))
    assert str(err.value).startswith(str(tmp_path / where)) and message in str(err.value)


def test_missing_empty_and_undecodable_files(tmp_path):
    with pytest.raises(RagbatchError, match="no such file"):
        read_questions(str(tmp_path / "none.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(RagbatchError, match="no questions"):
        read_questions(str(tmp_path / "empty.jsonl"))
    (tmp_path / "latin.txt").write_bytes(b"ok?\ncaf\xe9?\n")
    with pytest.raises(RagbatchError, match=r"latin.txt:2: not UTF-8"):
        read_questions(str(tmp_path / "latin.txt"))
    (tmp_path / "q.csv").write_text("text\nhello\n")
    with pytest.raises(RagbatchError, match='no "question" column'):
        read_questions(str(tmp_path / "q.csv"))


def test_bad_lines_are_reported_and_skipped_when_the_caller_goes_on(tmp_path):
    problems = []
    f = tmp_path / "q.jsonl"
    f.write_bytes(
        b'\xef\xbb\xbf{"question": "First?"}\n'  # a byte-order mark
        b'{"question": "caf\xe9?"}\n'  # invalid UTF-8 in the middle of the file
        b'{"question": "   "}\n'
        b'{"id": "a", "question": "Second?"}\n'
        b'{"id": "a", "question": "Again?"}\n'
        b'{"question": "' + b"x" * 100_000 + b'"}\n'
        b'{"question": "Trunc'  # a trailing partial line
    )
    questions = read_questions(str(f), on_problem=problems.append)
    assert [q["question"][:8] for q in questions] == ["First?", "Second?", "x" * 8]
    assert [e.where for e in problems] == [f"{f}:{n}" for n in (2, 3, 5, 7)]
    assert [e.reason[:14] for e in problems] == ["not UTF-8 text", "missing or emp", "duplicate id '", "not valid JSON"]
    with pytest.raises(InputFileError, match=r"q.jsonl:2: not UTF-8"):
        read_questions(str(f))  # without a handler the first bad line stops the read


def test_csv_quoted_fields_keep_newlines_and_quotes_and_name_their_first_line(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text('id,question\n1,"Two\nlines, and ""quotes""?"\n2,\n3,Plain?\n', newline="")
    problems = []
    questions = read_questions(str(f), on_problem=problems.append)
    assert [q["question"] for q in questions] == ['Two\nlines, and "quotes"?', "Plain?"]
    assert [e.where for e in problems] == [f"{f}:4"]


def test_a_file_of_only_bad_lines_is_an_error(tmp_path):
    (tmp_path / "q.jsonl").write_text("{nope\n")
    with pytest.raises(RagbatchError, match="no usable questions"):
        read_questions(str(tmp_path / "q.jsonl"), on_problem=lambda e: None)


def test_a_binary_file_is_one_line_not_one_per_line(tmp_path):
    (tmp_path / "q.txt").write_bytes(b"\x00\x01\x02\n" * 50)
    problems = []
    with pytest.raises(RagbatchError) as refused:
        read_questions(str(tmp_path / "q.txt"), on_problem=problems.append)
    assert problems == [] and "a binary file (it holds NUL bytes)" in str(refused.value)
