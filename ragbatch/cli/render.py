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


def ask_summary(report) -> None:
    _table(
        "ragbatch ask",
        [
            ("store", report.store),
            ("questions", report.questions),
            ("answered now", report.answered),
            ("failed", report.failed),
            ("skipped (already answered)", report.skipped),
            ("prompt tokens", report.prompt_tokens),
            ("completion tokens", report.completion_tokens),
            ("cost (USD)", f"{report.cost_usd:.6f}"),
            ("generation tokens/s", f"{report.tokens_per_second:.1f}"),
            ("seconds", f"{report.seconds:.1f}"),
            ("answers", f"{report.out} ({report.rows} rows)"),
        ],
    )


def judge_summary(report) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report.summary.overall
    _table(
        "ragbatch judge",
        [
            ("judge", report.judge),
            ("answers", report.rows),
            ("judged now", report.judged),
            ("failed", report.failed),
            ("skipped (already judged)", report.skipped),
            ("verdicts asked again / unparsed", f"{report.retried} / {report.unparsed}"),
            ("quality, mean (1-5)", _score(s.quality_mean)),
            ("quality >= 4, share", _score(s.quality_good, 3)),
            ("relevance, mean (1-5)", _score(s.relevance_mean)),
            ("groundedness (sentences supported)", _score(s.groundedness, 3)),
            ("citations (sentences their passages support)", f"{_score(s.citation_support, 3)} of {s.citations_checked}"),
            ("seconds", f"{report.seconds:.1f}"),
            ("verdicts", report.out),
        ],
    )
    groups = report.summary.groups
    if groups:
        table = Table(title=f"per {report.summary.by}", title_justify="left")
        for name in (report.summary.by, "answers", "quality", ">= 4", "relevance", "groundedness"):
            table.add_column(name, justify="left" if name == report.summary.by else "right")
        for name, g in groups.items():
            table.add_row(name, str(g.rows), _score(g.quality_mean), _score(g.quality_good, 3), _score(g.relevance_mean), _score(g.groundedness, 3))
        Console().print(table)


def synth_summary(report) -> None:
    _table(
        "ragbatch synth",
        [
            ("model", report.llm),
            ("questions wanted", report.wanted),
            ("chunks sampled", report.chunks),
            ("written", report.written),
            ("dropped: unparsed / repeated / copied the chunk", f"{report.unparsed} / {report.duplicates} / {report.copied}"),
            ("seconds", f"{report.seconds:.1f}"),
            ("questions", report.out),
        ],
    )


def _score(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def search_results(question: str, store, results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{question}  [dim](store {store})[/dim]", title_justify="left", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source")
    table.add_column("text")
    for r in results:
        text = r["text"] if len(r["text"]) <= 400 else r["text"][:400] + " ..."
        table.add_row(str(r["rank"]), f"{r['score']:.3f}", r["source"], text)
    Console().print(table)


def eval_summary(summary: dict, ks: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    def rate(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    if summary.get("modes"):
        return eval_modes_summary(summary, ks)
    table = Table(title=f"ragbatch eval ({summary['retrieval']})", title_justify="left")
    table.add_column("metric", style="bold")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    table.add_row("page hit", *[rate(summary["hit_at"].get(k)) for k in ks])
    if summary.get("section_hit_at"):
        table.add_row("section hit", *[rate(summary["section_hit_at"].get(k)) for k in ks])
    if summary.get("answer_hit_at"):
        table.add_row("answer hit", *[rate(summary["answer_hit_at"].get(k)) for k in ks])
    console = Console()
    console.print(table)
    lines = [
        f"store {summary['store']}",
        f"questions {summary['questions']}, scored {summary.get('scored', '-')}, missing sources {summary['missing_sources']}",
        f"MRR {rate(summary['mrr'])}",
    ]
    if "exact_match" in summary:
        lines.append(f"exact match {rate(summary['exact_match'])}, F1 {rate(summary['f1'])}, I don't know {rate(summary.get('dont_know_rate'))}")
    console.print("\n".join(lines))


def eval_modes_summary(summary: dict, ks: list[int]) -> None:
    """`eval --retrieval dense,bm25,hybrid`: one row per mode."""
    from rich.console import Console
    from rich.table import Table

    def rate(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    modes = summary["modes"]
    groups = [("page", "hit_at")]
    groups += [(name, key) for name, key in (("section", "section_hit_at"), ("answer", "answer_hit_at")) if any(m.get(key) for m in modes.values())]
    from rich import box

    table = Table(title="ragbatch eval", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("mode", style="bold", no_wrap=True)
    for name, _ in groups:
        for k in ks:
            table.add_column(f"{name[0]}@{k}", justify="right", no_wrap=True)
    table.add_column("MRR", justify="right", no_wrap=True)
    for mode, s in modes.items():
        table.add_row(mode, *[rate((s.get(key) or {}).get(k)) for _, key in groups for k in ks], rate(s["mrr"]))
    console = Console()
    console.print(table)
    lines = [
        "p@k: page hit, "
        + ("s@k: section hit, " if len(groups) > 1 and groups[1][0] == "section" else "")
        + ("a@k: answer hit, " if groups[-1][0] == "answer" else "")
        + "MRR: page level",
        f"questions {summary['questions']}, scored {summary.get('scored', '-')}, missing sources {summary['missing_sources']}",
    ]
    if summary.get("filter"):
        lines.append(f"filter: {summary['filter']}")
    if summary.get("report"):
        lines.append(f"report: {summary['report']}")
    console.print("\n".join(lines))
