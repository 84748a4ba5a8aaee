"""Read questions: JSONL, CSV, Parquet, plain text (one a line), or `-` for stdin.

Every question becomes `{"id": str, "question": str, **other fields}`. Ids come from
the input or, when absent, from a hash of the question's text (`q-` and 16 hex digits;
`-2`, `-3`... for repeats), so editing the file never gives an old answer to another
question on `--resume`, as line numbers would. Errors name the file and the line: a
malformed JSONL line, a missing `question`, a duplicate id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path

from ragbatch.errors import InputFileError, RagbatchError


def read_questions(path: str) -> list[dict]:
    if path == "-":
        text = sys.stdin.read()
        name = "<stdin>"
        kind = "jsonl" if text.lstrip().startswith("{") else "txt"
    else:
        file = Path(path)
        name = path
        if not file.exists():
            raise RagbatchError(f"{path}: no such file")
        if file.is_dir():
            raise RagbatchError(f"{path}: is a directory, not a questions file")
        suffix = file.suffix.lower()
        kind = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}.get(suffix, "txt")
        if kind == "parquet":
            return _check(_from_parquet(file), name)
        text = _read_text(file)
    rows = {"jsonl": _from_jsonl, "csv": _from_csv, "txt": _from_txt}[kind](text, name)
    return _check(rows, name)


def _read_text(file: Path) -> str:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise RagbatchError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RagbatchError(f"{file}:{line}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x})") from None


def _from_jsonl(text: str, name: str) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputFileError(f"{name}:{number}", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise InputFileError(f"{name}:{number}", "expected a JSON object with a \"question\" field")
        rows.append((number, row))
    return rows


def _from_csv(text: str, name: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "question" not in reader.fieldnames:
        raise InputFileError(f"{name}:1", "no \"question\" column in the CSV header")
    return [(reader.line_num, dict(row)) for row in reader]


def _from_txt(text: str, name: str) -> list[tuple[int, dict]]:
    return [(n, {"question": line.strip()}) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _from_parquet(file: Path) -> list[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise RagbatchError(f"{file}: not a readable Parquet file ({exc})") from None
    if "question" not in table.column_names:
        raise RagbatchError(f"{file}: no \"question\" column")
    return [(n, row) for n, row in enumerate(table.to_pylist(), start=1)]


def _check(rows: list[tuple[int, dict]], name: str) -> list[dict]:
    """Validate and give every question a string id; row numbers name the culprit."""
    if not rows:
        raise RagbatchError(f"{name}: no questions (empty file)")
    seen: dict[str, int] = {}
    repeats: dict[str, int] = {}
    questions = []
    for number, row in rows:
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InputFileError(f"{name}:{number}", "missing or empty \"question\" field")
        question = question.strip()
        qid = row.get("id")
        if qid is None or qid == "":
            qid = text_id(question)
            repeats[qid] = repeats.get(qid, 0) + 1
            qid = qid if repeats[qid] == 1 else f"{qid}-{repeats[qid]}"
        qid = str(qid)
        if qid in seen:
            raise InputFileError(f"{name}:{number}", f"duplicate id {qid!r} (first on line {seen[qid]})")
        seen[qid] = number
        questions.append({**row, "id": qid, "question": question})
    return questions


def text_id(question: str) -> str:
    """A question's id when the input gives none: stable across edits of other lines."""
    return "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]
