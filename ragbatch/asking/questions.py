"""Read questions: JSONL, CSV, Parquet, plain text (one a line), or `-` for stdin.

Every question becomes `{"id": str, "question": str, **other fields}`. Ids come from
the input or, when absent, from a hash of the question's text (`q-` and 16 hex digits;
`-2`, `-3`... for repeats), so editing the file never gives an old answer to another
question on `--resume`, as line numbers would.

A bad line (malformed or truncated JSON, invalid UTF-8, a missing or blank `question`,
a repeated id) is an `InputFileError` naming the file and the line. With `on_problem`
the line is reported to it and skipped, so one bad line does not stop a batch;
without, the first one is raised. A file with no usable question is always an error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ragbatch.errors import InputFileError, RagbatchError

QuestionSource = str | list  # a file's path, "-" for stdin, or questions (strings or dicts)

SUFFIX_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def read_questions(path: QuestionSource, on_problem: Callable[[InputFileError], None] | None = None) -> list[dict]:
    """The questions of a file (or, from Python, of a list of strings or dicts, numbered
    from 1 in messages), each with a string id."""
    reported: list[tuple[int, str]] = []
    name = path if isinstance(path, str) else "<questions>"

    def problem(number: int, reason: str) -> None:
        if on_problem is None:
            raise InputFileError(f"{name}:{number}", reason)
        reported.append((number, reason))

    if isinstance(path, str):
        name, kind, data = _source(path)  # "-" is named <stdin>
        if kind == "parquet":
            rows = _from_parquet(data, name)
        elif kind == "csv":
            rows = _from_csv(_decode_whole(data, name), name)
        else:
            lines = _decoded_lines(data, problem)
            rows = _from_jsonl(lines, problem) if kind == "jsonl" else _from_txt(lines)
    else:
        rows = [(n, q if isinstance(q, dict) else {"question": q}) for n, q in enumerate(path, start=1)]
    questions = _check(rows, problem)
    if on_problem is not None:
        for number, reason in sorted(reported):  # in line order, whichever check found them
            on_problem(InputFileError(f"{name}:{number}", reason))
    if not questions:
        raise RagbatchError(f"{name}: no usable questions (every one had an error)" if reported else f"{name}: no questions (empty file)")
    return questions


def _source(path: str) -> tuple[str, str, bytes]:
    """The name messages use, the format, and the raw bytes."""
    if path == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        return "<stdin>", "jsonl" if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "txt", data
    file = Path(path)
    if not file.exists():
        raise RagbatchError(f"{path}: no such file")
    if file.is_dir():
        raise RagbatchError(f"{path}: is a directory, not a questions file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise RagbatchError(f"{path}: cannot read ({exc.strerror})") from None
    kind = SUFFIX_KINDS.get(file.suffix.lower(), "txt")
    if kind != "parquet" and b"\x00" in data:  # one line for the file, not one per line
        raise RagbatchError(f"{path}: a binary file (it holds NUL bytes), not questions: JSONL, CSV, Parquet or text, one question a line")
    return path, kind, data


def _decode_whole(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RagbatchError(f"{name}:{line}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x})") from None


def _decoded_lines(data: bytes, problem) -> list[tuple[int, str]]:
    """(line number, text) of each line that decodes; a byte-order mark is dropped."""
    lines = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            lines.append((number, raw.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError as exc:
            problem(number, f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x})")
    return lines


def _from_jsonl(lines: list[tuple[int, str]], problem) -> list[tuple[int, dict]]:
    rows = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problem(number, f"not valid JSON: {exc.msg}: column {exc.colno}")
            continue
        if not isinstance(row, dict):
            problem(number, 'expected a JSON object with a "question" field')
            continue
        rows.append((number, row))
    return rows


def _from_csv(text: str, name: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "question" not in reader.fieldnames:
        raise InputFileError(f"{name}:1", 'no "question" column in the CSV header')
    rows = []
    start = 2  # the line a row starts on: a quoted field may hold newlines
    for row in reader:
        rows.append((start, dict(row)))
        start = reader.line_num + 1
    return rows


def _from_txt(lines: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    return [(n, {"question": line.strip()}) for n, line in lines if line.strip()]


def _from_parquet(data: bytes, name: str) -> list[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise RagbatchError(f"{name}: not a readable Parquet file ({exc})") from None
    if "question" not in table.column_names:
        raise RagbatchError(f'{name}: no "question" column')
    return [(n, row) for n, row in enumerate(table.to_pylist(), start=1)]


def _check(rows: list[tuple[int, dict]], problem) -> list[dict]:
    """Validate and give every question a string id; row numbers name the culprit."""
    seen: dict[str, int] = {}
    repeats: dict[str, int] = {}
    questions = []
    for number, row in rows:
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            problem(number, 'missing or empty "question" field')
            continue
        question = question.strip()
        qid = row.get("id")
        if qid is None or qid == "":
            qid = text_id(question)
            repeats[qid] = repeats.get(qid, 0) + 1
            qid = qid if repeats[qid] == 1 else f"{qid}-{repeats[qid]}"
        qid = str(qid)
        if qid in seen:
            problem(number, f"duplicate id {qid!r} (first on line {seen[qid]})")
            continue
        seen[qid] = number
        questions.append({**row, "id": qid, "question": question})
    return questions


def text_id(question: str) -> str:
    """A question's id when the input gives none: stable across edits of other lines."""
    return "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]
