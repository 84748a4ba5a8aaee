"""The rows `judge` rates: an `ask` answer file, or any JSONL/CSV/Parquet with
`question` and `answer`, and for each what it is judged against.

- reference: `reference_answer`; else `input_answer` (the gold `answer` of a question
  file `ask` carried through, such as `synth`'s); else `answers` (gold strings, joined).
- passages: `passages` (a list of texts); else `chunk_ids` read from the store (the
  first `passages_used` of them where an `ask` file says how many the prompt held).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragbatch.asking.questions import read_questions
from ragbatch.errors import InputFileError, RagbatchError


@dataclass
class Judged:
    """One row to judge, with what it is judged against (None: not known)."""

    row: dict  # the input row: id, question, answer and the rest
    reference: str | None
    passages: list[str] | None


def read_rows(path: str, on_problem: Callable[[InputFileError], None]) -> tuple[list[dict], int]:
    """(rows with an answer, rows without one: an `ask` row that failed, or no `answer`)."""
    rows = read_questions(path, on_problem=on_problem)
    with_answer = [row for row in rows if isinstance(row.get("answer"), str) and row["answer"].strip()]
    if not with_answer:
        raise RagbatchError(f'{path}: no row has an "answer" to judge')
    return with_answer, len(rows) - len(with_answer)


def reference_of(row: dict) -> str | None:
    for field in ("reference_answer", "input_answer"):
        value = row.get(field)
        if isinstance(value, str) and value.strip():
            return value
    gold = row.get("answers")
    if isinstance(gold, list) and any(isinstance(g, str) and g.strip() for g in gold):
        return " / ".join(g for g in gold if isinstance(g, str) and g.strip())
    return None


def chunk_ids_of(row: dict) -> list[str] | None:
    ids = row.get("chunk_ids")
    if not isinstance(ids, list) or not ids:
        return None
    used = row.get("passages_used")
    return [str(i) for i in (ids[:used] if isinstance(used, int) and used > 0 else ids)]


def attach(rows: list[dict], texts: Callable[[list[str]], dict[str, str]] | None) -> list[Judged]:
    """Each row with its reference and passages; `texts` reads chunk texts by id from the
    store (None: no store, so only rows with a `passages` field have passages)."""
    wanted = sorted({cid for row in rows for cid in (chunk_ids_of(row) or ())}) if texts else []
    found = texts(wanted) if wanted and texts else {}
    judged = []
    for row in rows:
        passages = row.get("passages")
        if not (isinstance(passages, list) and passages):
            ids = chunk_ids_of(row)
            passages = [found[i] for i in ids if i in found] if ids and found else None
        judged.append(Judged(row, reference_of(row), [str(p) for p in passages] if passages else None))
    return judged


def store_of(run: dict | None, given: Path | None) -> Path | None:
    """The store to read passages from: the one given, else the one the answer file's run
    recorded (where it still exists)."""
    if given is not None:
        return given
    recorded = (run or {}).get("store")
    return Path(recorded) if recorded and Path(recorded).is_dir() else None
