"""What a verdict file says in a few numbers: overall and per group (system, llm, or any column)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.errors import ParameterError

GOOD = 4  # the share of answers scoring at least this is reported


@dataclass
class Scores:
    rows: int = 0
    failed: int = 0
    quality_mean: float | None = None
    quality_good: float | None = None  # share of rated answers with quality >= GOOD
    quality_rated: int = 0
    relevance_mean: float | None = None
    groundedness: float | None = None  # supported sentences / judged sentences
    sentences_judged: int = 0
    citation_support: float | None = None  # citing sentences their cited passages support / checked
    citations_checked: int = 0

    def as_json(self) -> dict:
        return {name: (round(value, 4) if isinstance(value, float) else value) for name, value in self.__dict__.items()}


@dataclass
class JudgeSummary:
    overall: Scores = field(default_factory=Scores)
    by: str | None = None
    groups: dict[str, Scores] = field(default_factory=dict)
    histogram: dict[int, int] = field(default_factory=dict)  # quality score -> answers

    def as_json(self) -> dict:
        return {
            **self.overall.as_json(),
            "quality_histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "by": self.by,
            "groups": {name: scores.as_json() for name, scores in self.groups.items()},
        }


def summarize(path: Path, by: str | None = None) -> JudgeSummary:
    """The summary of a verdict file; `by` defaults to `system`, else `llm`, where present."""
    import pyarrow.parquet as pq

    if not Path(path).exists():
        return JudgeSummary()
    table = pq.read_table(path)
    names = table.column_names
    if by is None:
        by = next((c for c in ("system", "llm") if c in names), None)
    elif by not in names:
        raise ParameterError("by", by, f"not a column of {path} (its columns: {', '.join(names)})")
    rows = table.to_pylist()
    summary = JudgeSummary(overall=scores_of(rows), by=by)
    for row in rows:
        if row.get("quality") is not None:
            summary.histogram[row["quality"]] = summary.histogram.get(row["quality"], 0) + 1
    if by:
        grouped: dict[str, list[dict]] = {}
        for row in rows:
            grouped.setdefault(str(row.get(by)), []).append(row)
        summary.groups = {name: scores_of(group) for name, group in sorted(grouped.items())}
    return summary


def scores_of(rows: list[dict]) -> Scores:
    quality = [r["quality"] for r in rows if r.get("quality") is not None]
    relevance = [r["relevance"] for r in rows if r.get("relevance") is not None]
    judged = sum(r.get("sentences_judged") or 0 for r in rows)
    supported = sum(round((r.get("groundedness") or 0.0) * (r.get("sentences_judged") or 0)) for r in rows)
    checked = sum(r.get("citations_checked") or 0 for r in rows)
    backed = sum(r.get("citations_supported") or 0 for r in rows)
    return Scores(
        rows=len(rows),
        failed=sum(1 for r in rows if r.get("error")),
        quality_mean=_mean(quality),
        quality_good=sum(1 for q in quality if q >= GOOD) / len(quality) if quality else None,
        quality_rated=len(quality),
        relevance_mean=_mean(relevance),
        groundedness=supported / judged if judged else None,
        sentences_judged=judged,
        citation_support=backed / checked if checked else None,
        citations_checked=checked,
    )


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
