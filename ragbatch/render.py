"""Human-readable summaries (rich tables on stdout)."""

from __future__ import annotations


def _table(title: str, rows: list[tuple[str, object]]):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, str(value))
    Console().print(table)


def index_summary(report) -> None:
    rows = [
        ("store", report.store),
        ("embedder", report.embedder),
        ("executor", report.executor),
        ("files", report.files),
        ("chunks in store", report.chunks),
        ("embedded now", report.embedded),
        ("unchanged", report.unchanged),
        ("deleted", report.deleted),
        ("skipped files", report.skipped_files),
        ("ms per vector", "-" if report.ms_per_vector is None else f"{report.ms_per_vector:.2f}"),
        ("seconds", f"{report.seconds:.1f}"),
    ]
    if report.published:
        rows.append(("published", report.published))
    _table("ragbatch index", rows)
