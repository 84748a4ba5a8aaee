"""`ragbatch eval`: retrieval (and, given answers, answer) quality against references.

References are JSONL with `question`, `source` (a path as the store records it,
optionally with `#anchor`), optional `answers` and `id`. Metrics are computed by
metrics.py; this module runs the retrieval and gathers what the metrics need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.asking.questions import read_questions
from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.evaluation.metrics import question_row, summarize
from ragbatch.evaluation.report import write_report
from ragbatch.progress import working
from ragbatch.retrieval.retriever import Retriever
from ragbatch.retrieval.selection import Selection, parse_modes
from ragbatch.retrieval.sources import page_of
from ragbatch.store.manifest import require_store_path
from ragbatch.store.records import Hit

# The HTML report's hit@k curves run to at least this k.
REPORT_DEPTH = 20


@dataclass
class EvalOptions:
    references: str
    store: Path
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    answers: Path | None = None
    out: Path | None = None
    retrieval: str = "hybrid"  # one mode, or several separated by commas: dense,bm25,hybrid
    device: str = "auto"
    report: Path | None = None  # a self-contained HTML page (see report.py)
    selection: Selection = field(default_factory=Selection)  # filter and diversity limits; its mode and k are the ones above
    wait: float | None = None  # seconds to wait for an index run writing the store (None: until it ends)


# More than this share of references naming sources the store lacks is a mistake (the
# wrong store, a subfolder indexed), not a result.
MOST_MISSING = 0.5


def read_references(path: str, on_problem) -> list[dict]:
    """The references with a source; a bad line (or a reference without a source) is given
    to `on_problem` and skipped, as `ask` skips bad question lines."""
    references = []
    for ref in read_questions(path, on_problem=on_problem):
        if isinstance(ref.get("source"), str) and ref["source"]:
            references.append(ref)
        else:
            on_problem(f'{path}: reference {ref["id"]!r} has no "source" (the path the answer is in)')
    if not references:
        raise RagbatchError(f"{path}: no reference has a source to score against")
    return references


def read_answers(path: Path, references: list[dict]) -> dict[str, str | None]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["id", "answer"])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise ParameterError("answers", path, f"not an answers file from `ragbatch ask` ({exc})") from None
    answers = dict(zip(table.column("id").to_pylist(), table.column("answer").to_pylist()))
    if not answers.keys() & {ref["id"] for ref in references}:
        raise ParameterError("answers", path, "answers none of the references' ids; was it made from the same questions file?")
    return answers


def cited_on(hit: Hit, gold: str) -> str:
    """The hit as cited, at its place on the gold page where its text is stored for several
    places (`also`): retrieving the text counts wherever it is stored."""
    places = (hit.cited, *hit.also)
    return next((p for p in places if p == gold), None) or next((p for p in places if page_of(p) == page_of(gold)), hit.cited)


def evaluate(options: EvalOptions, progress, notify=lambda line: None) -> tuple[dict, list[dict]]:
    """Summary and per-question rows. With several modes (`retrieval="dense,bm25,hybrid"`),
    every mode is scored from one retrieval pass (questions embedded once): the summary is
    the first mode's, with `modes` holding each mode's summary, and rows carry `retrieval`.
    A bad references line is skipped (given to `notify`, and listed in `errors`)."""
    started = time.perf_counter()
    require_store_path(options.store)
    modes = parse_modes(options.retrieval)
    errors: list[str] = []

    def skip(error) -> None:
        errors.append(str(error))
        notify(f"error: {error} (skipped)")

    references = read_references(options.references, skip)
    answers = read_answers(options.answers, references) if options.answers else {}
    for param, path in (("out", options.out), ("report", options.report)):
        if path and not Path(path).parent.is_dir():
            raise ParameterError(param, path, f"the folder {Path(path).parent} does not exist")

    depth = max(max(options.ks), REPORT_DEPTH if options.report else 0)
    selection = Selection(modes[0], depth, options.selection.chunk_filter, options.selection.max_per_section, options.selection.max_per_page)
    with working(progress, "Loading the store's embedder"):
        retriever = Retriever.open(options.store, device=options.device, modes=modes, notify=notify, wait=options.wait)
    try:
        store_pages = {page_of(fields.get("source", "")) for _, fields in retriever.store.vectors.scan()}
        store_pages |= {page_of(copy["source"]) for copies in retriever.store.copies.values() for copy in copies}
        refuse_most_missing(references, store_pages, options)
        task = progress.add_task("Retrieving", total=len(references))
        ranked = retriever.search_modes([r["question"] for r in references], selection, modes)
        progress.advance(task, len(references))
    finally:
        retriever.close()

    rows, summaries, deep = [], {}, {}
    cut = max(options.ks)  # scores use the top max(ks) only, with or without a report
    for mode in modes:
        mode_rows = [
            {
                **question_row(
                    ref,
                    [(cited_on(h, ref["source"]), h.text) for h in hits[:cut]],
                    options.ks,
                    store_pages,
                    answers.get(ref["id"]) if answers else None,
                    [h.anchors for h in hits[:cut]],
                ),
                "retrieval": mode,
            }
            for ref, hits in zip(references, ranked[mode])
        ]
        summaries[mode] = summarize(mode_rows, options.ks)
        summaries[mode]["retrieval"] = mode
        rows += mode_rows
        if options.report:  # the same questions scored to the report's depth, for its curves
            deep[mode] = [
                question_row(ref, [(cited_on(h, ref["source"]), h.text) for h in hits], [], store_pages, None, [h.anchors for h in hits])
                for ref, hits in zip(references, ranked[mode])
            ]
    seconds = round(time.perf_counter() - started, 3)
    summary = {**summaries[modes[0]], "retrieval": ",".join(modes), "store": str(options.store), "seconds": seconds}
    if len(modes) > 1:
        summary["modes"] = summaries
    if selection.chunk_filter:
        summary["filter"] = selection.chunk_filter.describe()
    if answers:
        summary["answers_matched"] = sum(1 for ref in references if ref["id"] in answers)
    summary["errors"] = errors
    if options.out:
        write_rows(rows, Path(options.out))
    if options.report:
        write_report(Path(options.report), summaries, deep, options.ks, depth, title=f"{Path(options.references).name} on {options.store}")
        summary["report"] = str(options.report)
    return summary, rows


def refuse_most_missing(references: list[dict], store_pages: set[str], options: EvalOptions) -> None:
    """Most references naming pages the store lacks is a wrong store or a wrong folder."""
    missing = [ref["source"] for ref in references if page_of(ref["source"]) not in store_pages]
    if len(missing) > MOST_MISSING * len(references):
        example = sorted(store_pages)[0] if store_pages else "nothing"
        raise RagbatchError(
            f"{options.references}: {len(missing)} of {len(references)} references name pages {options.store} does not hold "
            f"(e.g. {missing[0]}; the store holds e.g. {example}); index the folder the references' paths are relative to, or use another {{store}}",
            refers=("store",),
        )


def write_rows(rows: list[dict], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), out)
