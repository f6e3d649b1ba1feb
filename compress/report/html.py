"""report.html: one self-contained page (no network) with interactive plots inline, a sortable table
of variants per target, each variant's lineage and speed-up over its parent, and the environment."""

from __future__ import annotations

import base64
import html

from compress.report.interactive import figure, has_accuracy, plot_div, plotly_js
from compress.report.layers import LAYERS_NOTE, op_table, slowest_layers
from compress.report.plots import render_plots
from compress.report.render import (
    METRICS_NOTE,
    PARTS_NOTE,
    columns,
    comparison_rows,
    metrics_table,
    parts_table,
    readable,
    target_facts,
    target_title,
)
from compress.report.schema import Report
from compress.report.searched import search_note, search_table

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none}td:first-child,td:nth-child(2){text-align:left}
tr.front td{font-weight:600}img{max-width:100%}code{background:#f6f6f6;padding:0 .2rem}
.warn{color:#9a5b00}table.environment td{text-align:left}table.environment th{text-align:left;cursor:auto}
table.environment td:first-child{white-space:nowrap}
"""

# Click a header to sort by that column; numbers sort numerically, '–' last.
SCRIPT = """
document.querySelectorAll('table.variants th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  const key = r => { const t = r.cells[col].textContent.replace(/[×%+ ]/g, ''); const n = parseFloat(t);
                     return isNaN(n) ? (t === '–' ? Infinity : t) : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x > y ? 1 : x < y ? -1 : 0) * (dir === 'asc' ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""


def _table(report: Report, target) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns(report))
    rows = []
    for row in comparison_rows(report, target):
        cls = ' class="front"' if row[-1] == "yes" else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    return f'<table class="variants"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _section(title: str, note: str, table: tuple) -> list[str]:
    """A titled, sortable table of a target (metrics, time per part); nothing when it has no rows."""
    header, rows = table
    if not rows:
        return []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return [f"<h3>{html.escape(title)}</h3>", f"<p>{html.escape(note)}</p>",
            f'<table class="variants"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>']  # fmt: skip


def _slowest(report: Report, target) -> str:
    """Each profiled variant's slowest layers, folded away."""
    items = [(v.name, found) for v in report.variants if (found := slowest_layers(v, target.name))]
    return "".join(f"<details><summary>Slowest layers of {html.escape(name)}</summary><ol>"
                   + "".join(f"<li>{html.escape(line)}</li>" for line in found) + "</ol></details>"
                   for name, found in items)  # fmt: skip


def _plot(report: Report, target, png: bytes) -> str:
    """The interactive accuracy-latency plot; the PNG where nothing had accuracy (a profiled model)."""
    if has_accuracy(report, target.name):
        return plot_div(figure(report, [target]), f"plot-{report.targets.index(target)}")
    data = base64.b64encode(png).decode()
    return f'<img alt="p50 latency on {html.escape(target.name)}" src="data:image/png;base64,{data}">'


def _across(report: Report) -> list[str]:
    """All targets in one plot, each a legend group to toggle; only when two or more have accuracy."""
    scored = [t for t in report.targets if has_accuracy(report, t.name)]
    if len(scored) < 2:
        return []
    note = "Click a target's title in the legend to hide or show it, a family to toggle it; drag to zoom."
    return ["<h2>Across targets</h2>", f"<p>{note}</p>", plot_div(figure(report, scored), "plot-all")]


def _lineage(report: Report) -> str:
    items = []
    for v in report.variants:
        speed = ", ".join(f"{t}: {s:.2f}×" for t, s in v.speedup_vs_parent.items()) or "–"
        errors = "".join(f'<br><span class="warn">{html.escape(e)}</span>' for e in v.errors)
        items.append(f"<li><b>{html.escape(v.name)}</b> ({html.escape(v.format)}, {html.escape(v.precision)}): "
                     f"{html.escape(' → '.join(v.stages))}; parent {html.escape(v.parent or '–')}; "
                     f"speed-up over parent {html.escape(speed)}; <code>{html.escape(v.path)}</code>{errors}</li>")  # fmt: skip
    return "<ul>" + "".join(items) + "</ul>"


def _rows(rows: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)


def _target_rows(report: Report, t) -> list[tuple[str, str]]:
    """How a target measured: runtime, threads, protocol, then the device's state and each interval."""
    where = t.device + (f" at {t.host}" if t.host else "")
    rows = [("Runtime", t.runtime), ("Versions", readable(t.versions)), ("Device", where), ("Threads", str(t.threads)),
            ("Batch sizes", readable(t.batch_sizes)), ("Protocol", readable(t.protocol))]  # fmt: skip
    return rows + [(key, value) for key, _, value in (line.partition(": ") for line in target_facts(report, t))]


def _environment(report: Report) -> str:
    env = dict(report.environment)
    cpu = env.pop("cpu", {})
    rows = [("CPU", f"{cpu.get('model')} ({cpu.get('logical_cores')} logical cores)"),
            ("ISA", readable(cpu.get("isa", []))), ("OS", readable(env.pop("os", None))),
            ("Python", readable(env.pop("python", None))), ("Packages", readable(env.pop("packages", {})))]  # fmt: skip
    rows += [(key.capitalize(), readable(value)) for key, value in env.items()]
    body = _rows(rows) + "".join(f'<tr><th colspan="2">Target {html.escape(t.name)}</th></tr>'
                                 + _rows(_target_rows(report, t)) for t in report.targets)  # fmt: skip
    return f'<table class="environment">{body}</table>'


def to_html(report: Report, plots: dict[str, bytes] | None = None) -> str:
    plots = plots or render_plots(report)
    r = report.recipe
    parts = [f"<h1>compress report: {html.escape(r.name)}</h1>",
             f"<p>Recipe <code>{html.escape(r.path or r.name)}</code> (hash <code>{html.escape(r.hash)}</code>), "
             f"created {html.escape(report.created)}. Baseline: <code>{html.escape(report.baseline)}</code>. "
             "Each exported file was run in the target's runtime; click a column header to sort, hover a point in a "
             "plot for its details, click a legend entry to hide or show it and drag to zoom.</p>"]  # fmt: skip
    for target in report.targets:
        parts += [
            f"<h2>{html.escape(target_title(target))}</h2>",
            _table(report, target),
            *_section("Metrics", METRICS_NOTE, metrics_table(report, target)),
            *_section("Where the time goes", PARTS_NOTE, parts_table(report, target)),
            *_section("Time per op type", LAYERS_NOTE, op_table(report, target)),
            _slowest(report, target),
            _plot(report, target, plots[target.name]),
        ]
    parts += _across(report)
    parts += _section("Search", search_note(report), search_table(report)) if report.search else []
    parts += ["<h2>Variants</h2>", _lineage(report)]
    if report.warnings:
        parts += (
            ["<h2>Warnings</h2><ul>"] + [f'<li class="warn">{html.escape(w)}</li>' for w in report.warnings] + ["</ul>"]
        )
    parts += ["<h2>Environment</h2>", _environment(report)]
    # plotly.js once, before the plots that call it; pages without an interactive plot stay small
    library = f"<script>{plotly_js()}</script>" if any(has_accuracy(report, t.name) for t in report.targets) else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>compress: {html.escape(r.name)}'
            f"</title><style>{STYLE}</style>{library}</head><body>{''.join(parts)}<script>{SCRIPT}</script>"
            "</body></html>\n")  # fmt: skip
