"""`ragbatch eval`: retrieval (and, given answers, answer) quality against references.

References are the JSONL of ../shared/eval/*/questions.jsonl: `question`, `source`
(a path as the store records it, optionally with `#anchor`), optional `answers` and
`id`. Metrics are computed by `evaluation.py`; this module runs the retrieval and
gathers what the metrics need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.errors import RagbatchError
from ragbatch.manifest import require_store_path
from ragbatch.questions import read_questions


@dataclass
class EvalOptions:
    references: str
    store: Path
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    answers: Path | None = None
    out: Path | None = None
    retrieval: str = "hybrid"
    device: str = "auto"


def read_references(path: str) -> list[dict]:
    references = read_questions(path)
    for ref in references:
        if not isinstance(ref.get("source"), str) or not ref["source"]:
            raise RagbatchError(f"{path}: reference {ref['id']!r} has no \"source\" (the path the answer is in)")
    return references


def read_answers(path: Path) -> dict[str, str | None]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["id", "answer"])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise RagbatchError(f"--answers {path}: not an answers file from `ragbatch ask` ({exc})") from None
    return dict(zip(table.column("id").to_pylist(), table.column("answer").to_pylist()))


def evaluate(options: EvalOptions, progress) -> tuple[dict, list[dict]]:
    from ragbatch.evaluation import page_of, question_row, summarize
    from ragbatch.retrieval import Retriever

    started = time.perf_counter()
    require_store_path(options.store)
    references = read_references(options.references)
    answers = read_answers(options.answers) if options.answers else {}
    if options.out and not Path(options.out).parent.is_dir():
        raise RagbatchError(f"--out {options.out}: the folder {Path(options.out).parent} does not exist")

    retriever = Retriever(options.store, device=options.device, mode=options.retrieval)
    try:
        store_pages = {page_of(meta.get("source", "")) for _, meta in retriever.chroma.metadatas()}
        task = progress.add_task("Retrieving", total=len(references))
        ranked = retriever.search([r["question"] for r in references], max(options.ks))
        progress.advance(task, len(references))
    finally:
        retriever.close()

    rows = [
        question_row(ref, [(h.source, h.text) for h in hits], options.ks, store_pages, answers.get(ref["id"]) if answers else None)
        for ref, hits in zip(references, ranked)
    ]
    summary = summarize(rows, options.ks)
    summary.update(retrieval=options.retrieval, store=str(options.store), seconds=round(time.perf_counter() - started, 3))
    if answers:
        summary["answers_matched"] = sum(1 for ref in references if ref["id"] in answers)
    if options.out:
        write_rows(rows, Path(options.out))
    return summary, rows


def write_rows(rows: list[dict], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), out)
