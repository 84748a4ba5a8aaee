"""`ragbatch judge --report FILE.html`: one self-contained page in `eval --report`'s style
(inline CSS and SVG, no script): the quality histogram, the per-group comparison, and the
lowest-rated answers with the judge's reasons."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.evaluation.report import _CSS
from ragbatch.judging.summary import JudgeSummary, Scores

LOWEST = 20


def write_report(path: Path, summary: JudgeSummary, rows: list[dict], title: str = "") -> None:
    path.write_text(render(summary, rows, title), encoding="utf-8")


def render(summary: JudgeSummary, rows: list[dict], title: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    overall = summary.overall
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>ragbatch judge: {_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>ragbatch judge: {_e(title)}</h1>",
        f'<p class="meta">{overall.rows} answers, {overall.quality_rated} rated for quality, {overall.failed} failed; {stamp}</p>',
        "<h2>Quality scores</h2>",
        _histogram(summary.histogram),
        "<h2>Summary</h2>",
        _table({"all": overall, **summary.groups}, summary.by),
        _lowest(rows),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _histogram(counts: dict[int, int]) -> str:
    width, height, left, top, bottom = 390, 220, 40, 20, 40
    plot_h = height - top - bottom
    most = max(counts.values(), default=0) or 1
    bar = (width - left - 12) / 5
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="quality histogram" font-size="11" font-family="system-ui, sans-serif">'
    ]
    for score in range(1, 6):
        n = counts.get(score, 0)
        h = n / most * plot_h
        x = left + (score - 1) * bar
        out.append(f'<rect x="{x + 4:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 8:.1f}" height="{h:.1f}" fill="#1f77b4"><title>{score}: {n}</title></rect>')
        out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle">{n}</text>')
        out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="#555">{score}</text>')
    out.append(f'<text x="{left + (width - left) / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="#333">quality (1-5)</text>')
    out.append("</svg>")
    return "\n".join(out)


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(groups: dict[str, Scores], by: str | None) -> str:
    names = ("answers", "quality", "share &ge; 4", "relevance", "groundedness", "citations supported", "failed")
    head = f'<tr><th class="l">{_e(by or "")}</th>' + "".join(f"<th>{name}</th>" for name in names) + "</tr>"
    body = [
        f'<tr><td class="l">{_e(name)}</td><td>{s.rows}</td><td>{_number(s.quality_mean)}</td><td>{_number(s.quality_good, 3)}</td>'
        f"<td>{_number(s.relevance_mean)}</td><td>{_number(s.groundedness, 3)}</td><td>{_number(s.citation_support, 3)}</td><td>{s.failed}</td></tr>"
        for name, s in groups.items()
    ]
    return "<table>" + head + "".join(body) + "</table>"


def _lowest(rows: list[dict]) -> str:
    rated = sorted((r for r in rows if r.get("quality") is not None), key=lambda r: (r["quality"], r.get("quality_expected") or 0))[:LOWEST]
    if not rated:
        return ""
    parts = [f"<h2>The {len(rated)} lowest-rated answers</h2>"]
    for r in rated:
        parts.append(
            f'<div class="miss"><div class="q">{_e(r["question"])}</div>'
            f"<div>quality {r['quality']}: {_e(r.get('quality_reason') or '')}</div>"
            f'<div class="gold">{_e((r.get("answer") or "")[:600])}</div></div>'
        )
    return "\n".join(parts)
