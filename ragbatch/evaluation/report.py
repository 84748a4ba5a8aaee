"""`ragbatch eval --report FILE.html`: one self-contained page (inline CSS and SVG, no
script, nothing fetched) with the hit@k curves of every mode, the summary table, and
the worst misses with what was retrieved instead."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from ragbatch.retrieval.sources import page_of

WORST = 20
SHOWN_SOURCES = 10
COLOURS = {"dense": "#1f77b4", "bm25": "#ff7f0e", "hybrid": "#2ca02c"}
LEVELS = (
    ("rank", "page hit@k", "a chunk of the right page"),
    ("section_rank", "section hit@k", "a chunk of the right section"),
    ("answer_rank", "answer hit@k", "a chunk of the right page holding a gold answer"),
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px auto; max-width: 1100px; padding: 0 16px; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.meta { color: #666; } .plots { display: flex; flex-wrap: wrap; gap: 12px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td.l, th.l { text-align: left; }
.miss { margin: 10px 0 16px; } .miss .q { font-weight: 600; } .gold { color: #555; font-family: ui-monospace, monospace; font-size: 12px; }
ol.src { margin: 4px 0; padding-left: 28px; font-family: ui-monospace, monospace; font-size: 12px; }
ol.src li.page { color: #2ca02c; } ol.src li.section { color: #2ca02c; font-weight: 700; }
.ranks { font-size: 12px; color: #444; } .none { color: #c00; }
"""


def write_report(path: Path, summaries: dict, rows_by_mode: dict, ks: list[int], depth: int, title: str = "") -> None:
    """`summaries`: {mode: evaluation.summarize(...)}; `rows_by_mode`: {mode: question rows
    scored to `depth`}. The first mode is the one whose misses are listed."""
    path.write_text(render(summaries, rows_by_mode, ks, depth, title), encoding="utf-8")


def render(summaries: dict, rows_by_mode: dict, ks: list[int], depth: int, title: str = "") -> str:
    modes = list(rows_by_mode)
    first = summaries[modes[0]]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>ragbatch eval: {_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>ragbatch eval: {_e(title)}</h1>",
        f'<p class="meta">{first["questions"]} questions, {first["scored"]} scored, {first["missing_sources"]} with a source not in the store; '
        f"modes {', '.join(modes)}; {stamp}</p>",
        '<h2>Hit rate by rank cut-off</h2><div class="plots">',
    ]
    for key, label, meaning in LEVELS:
        curves = {mode: _curve(rows_by_mode[mode], key, depth) for mode in modes}
        if any(curve is not None for curve in curves.values()):
            parts.append(_plot(curves, label, meaning, depth))
    parts.append("</div><h2>Summary</h2>")
    parts.append(_table(summaries, modes, ks))
    parts.append(_misses(rows_by_mode, modes, depth))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _scored(rows: list[dict], key: str) -> list[dict]:
    rows = [r for r in rows if not r["missing_source"]]
    if key == "section_rank":
        return [r for r in rows if "#" in r["source"]]
    if key == "answer_rank":
        return [r for r in rows if r.get("answers")]
    return rows


def _curve(rows: list[dict], key: str, depth: int) -> list[float] | None:
    rows = _scored(rows, key)
    if not rows:
        return None
    return [sum(1 for r in rows if r[key] is not None and r[key] <= k) / len(rows) for k in range(1, depth + 1)]


def _plot(curves: dict, label: str, meaning: str, depth: int) -> str:
    width, height, left, right, top, bottom = 390, 276, 44, 12, 28, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for c in curves.values() if c for v in c]
    low = max(0.0, min(0.9, (min(values) // 0.1) * 0.1)) if values else 0.0
    if 1 - low > 0.6:
        low = max(0.0, 1 - 0.2 * -(-(1 - low) // 0.2))  # a whole number of 0.2 steps

    def x(k: int) -> float:
        return left + (k - 1) / max(1, depth - 1) * plot_w

    def y(v: float) -> float:
        return top + (1 - (v - low) / (1 - low)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_e(label)}" font-size="11" font-family="system-ui, sans-serif">',
        f"<title>{_e(label)}: {_e(meaning)} among the top k</title>",
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{_e(label)}</text>',
    ]
    step = 0.1 if 1 - low <= 0.6 else 0.2
    ticks = [round(1 - step * i, 2) for i in range(int(round((1 - low) / step)) + 1)]
    for v in ticks:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.2f}</text>')
    for k in sorted({1, *range(5, depth + 1, 5), depth}):
        out.append(f'<line x1="{x(k):.1f}" x2="{x(k):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{x(k):.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="#555">{k}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 30}" text-anchor="middle" fill="#333">k (chunks retrieved)</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    legend_y = height - 8  # one row under the axis, clear of the curves
    for n, (mode, curve) in enumerate(curves.items()):
        if not curve:
            continue
        colour = COLOURS.get(mode, "#555")
        points = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in enumerate(curve, start=1))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for k in (1, 5, 10, depth):
            if k <= len(curve):
                out.append(
                    f'<circle cx="{x(k):.1f}" cy="{y(curve[k - 1]):.1f}" r="2.5" fill="{colour}"><title>{mode} @{k}: {curve[k - 1]:.3f}</title></circle>'
                )
        lx = 4 + n * (width - 8) / len(curves)
        out.append(f'<line x1="{lx:.0f}" x2="{lx + 16:.0f}" y1="{legend_y - 4}" y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 20:.0f}" y="{legend_y}">{_e(mode)} @5 {curve[min(5, len(curve)) - 1]:.3f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _rate(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(summaries: dict, modes: list[str], ks: list[int]) -> str:
    groups = [("page hit", "hit_at")]
    if any(summaries[m].get("section_hit_at") for m in modes):
        groups.append(("section hit", "section_hit_at"))
    if any(summaries[m].get("answer_hit_at") for m in modes):
        groups.append(("answer hit", "answer_hit_at"))
    head = "".join(f'<th colspan="{len(ks)}">{name}</th>' for name, _ in groups)
    sub = "".join(f"<th>@{k}</th>" for _ in groups for k in ks)
    lines = ["<table>", f'<tr><th class="l" rowspan="2">mode</th>{head}<th rowspan="2">MRR</th></tr>', f"<tr>{sub}</tr>"]
    for mode in modes:
        s = summaries[mode]
        cells = "".join(f"<td>{_rate(_get(s.get(key), k))}</td>" for _, key in groups for k in ks)
        lines.append(f'<tr><td class="l">{_e(mode)}</td>{cells}<td>{_rate(s["mrr"])}</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)


def _get(rates, k):
    if not rates:
        return None
    return rates.get(k, rates.get(str(k)))


def _misses(rows_by_mode: dict, modes: list[str], depth: int) -> str:
    lead = modes[0]
    rows = [r for r in rows_by_mode[lead] if not r["missing_source"]]
    # A miss: the right page ranked low, or not at all, in the first (the default) mode.
    worst = sorted(range(len(rows)), key=lambda i: (-(rows[i]["rank"] or depth + 1), i))
    worst = [i for i in worst if (rows[i]["rank"] or depth + 1) > 1][:WORST]
    others = {m: {r["id"]: r for r in rows_by_mode[m]} for m in modes[1:]}
    out = [
        f"<h2>The {len(worst)} questions whose right page ranked lowest with {_e(lead)}</h2>",
        f'<p class="meta">Worst first: the right page not within the top {depth}, then ranked lowest; the passages retrieved instead, '
        "best first, as cited. Green: the right page; bold: the right section.</p>",
    ]
    for i in worst:
        r = rows[i]
        ranks = [f"{_e(lead)}: {_rank_text(r['rank'], depth)}"]
        ranks += [f"{_e(m)}: {_rank_text(others[m][r['id']]['rank'], depth)}" for m in modes[1:] if r["id"] in others[m]]
        items = []
        for source in r["ranked_sources"][:SHOWN_SOURCES]:
            cls = "section" if source == r["source"] else "page" if page_of(source) == page_of(r["source"]) else ""
            items.append(f'<li class="{cls}">{_e(source)}</li>')
        out.append(
            f'<div class="miss"><div class="q">{_e(r["question"])}</div><div class="gold">expected: {_e(r["source"])}</div>'
            f'<div class="ranks">first chunk of the right page: {"; ".join(ranks)}</div><ol class="src">{"".join(items)}</ol></div>'
        )
    return "\n".join(out)


def _rank_text(rank, depth: int) -> str:
    return f"rank {rank}" if rank is not None else f'<span class="none">not in the top {depth}</span>'
