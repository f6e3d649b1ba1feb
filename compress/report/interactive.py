"""Interactive accuracy-vs-latency plots for report.html, drawn by plotly.js in the browser.

Each point's hover shows the variant, its lineage, size, accuracy, p50 with its 95 % interval and
precision; legend clicks hide families and (across targets) whole targets; dragging zooms. The
plotly.js bundle is inlined in the page, so it opens offline and fetches nothing."""

from __future__ import annotations

import html
import json

from compress.report.plots import family
from compress.report.schema import Report, TargetInfo, Variant

MB = 1_000_000
# matplotlib's tab10, as in the PNG plots
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # fmt: skip
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "triangle-down", "pentagon", "hexagon"]
MARGIN_PX = 100  # the plot's top and bottom margins together
# Nothing that leaves the page: no cloud sharing button, no logo link.
CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True, "showSendToCloud": False,
          "modeBarButtonsToRemove": ["sendChartToCloud", "select2d", "lasso2d"]}  # fmt: skip


def plotly_js() -> str:
    """The plotly.js bundle that ships inside the `plotly` package (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def has_accuracy(report: Report, target: str) -> bool:
    return any(v.accuracy_on(target) for v in report.variants)


def grouping(report: Report):
    """What colours and toggles points: the `models:` family when the report has several, else precision."""
    if len({family(v) for v in report.variants}) > 1:
        return family
    return lambda v: v.precision


def _esc(text: str) -> str:
    """Plotly renders hover and legend text as a little HTML: names are shown as written."""
    return html.escape(str(text), quote=False)


def hover_text(report: Report, v: Variant, target: str) -> str:
    acc, lat = v.accuracy_on(target), v.latency_at(target, report.batch_for(target))
    interval = (f", 95 % interval [{lat.p50_ci_low_ms:.4g}, {lat.p50_ci_high_ms:.4g}] ms"
                if lat.p50_ci_low_ms is not None and lat.p50_ci_high_ms is not None else ", no interval")  # fmt: skip
    return "<br>".join([
        f"<b>{_esc(v.name)}</b> on {_esc(target)}",
        f"lineage: {_esc(' → '.join(v.stages))}; parent {_esc(v.parent or '–')}",
        f"size {v.size_bytes / MB:.3f} MB, precision {_esc(v.precision)}",
        f"{_esc(acc.metric)} {acc.value:.2f} %",
        f"p50 {lat.p50_ms:.4g} ms{interval} (batch {lat.batch_size})",
    ])  # fmt: skip


def _points(report: Report, target: str) -> list[Variant]:
    batch = report.batch_for(target)
    return [v for v in report.variants if v.accuracy_on(target) and v.latency_at(target, batch)]


def _marker_size(size: int, biggest: int) -> float:
    return 8 + 22 * (size / biggest) ** 0.5  # area grows with file size, as in the PNG


def _group_trace(report: Report, target: str, name: str, found: list[Variant], style: dict) -> dict:
    """One toggleable set of points: a family on a target."""
    batch = report.batch_for(target)
    biggest = max(v.size_bytes for v in report.variants) or 1
    return {
        "type": "scatter", "mode": "markers", "name": _esc(name),
        "x": [v.latency_at(target, batch).p50_ms for v in found], "y": [v.accuracy_on(target).value for v in found],
        "text": [hover_text(report, v, target) for v in found],
        "hovertemplate": "%{text}<extra></extra>",
        "marker": {"color": style["color"], "opacity": 0.75, "size": [_marker_size(v.size_bytes, biggest) for v in found],
                   "symbol": style["symbol"],
                   "line": {"color": "black", "width": [2 if v.pareto.get(target) else 0.5 for v in found]}},
    }  # fmt: skip


def _front_trace(report: Report, target: str) -> dict:
    batch = report.batch_for(target)
    front = sorted((v.latency_at(target, batch).p50_ms, v.accuracy_on(target).value)
                   for v in _points(report, target) if v.pareto.get(target))  # fmt: skip
    return {"type": "scatter", "mode": "lines", "name": "Pareto front",
            "x": [p[0] for p in front], "y": [p[1] for p in front], "hoverinfo": "skip",
            "line": {"color": "black", "dash": "dash", "width": 1}}  # fmt: skip


def _knee_trace(report: Report, target: str) -> dict:
    """The suggested trade-off, starred over its point (hover goes to the point beneath)."""
    chosen = report.front(target)
    knee = report.variant(chosen.knee) if chosen and chosen.knee else None
    lat = knee.latency_at(target, report.batch_for(target)) if knee else None
    acc = knee.accuracy_on(target) if knee else None
    return {"type": "scatter", "mode": "markers", "name": "knee", "hoverinfo": "skip",
            "x": [lat.p50_ms] if lat and acc else [], "y": [acc.value] if lat and acc else [],
            "marker": {"symbol": "star", "size": 18, "color": "gold", "line": {"color": "black", "width": 1}}}  # fmt: skip


def figure(report: Report, targets: list[TargetInfo]) -> dict:
    """Plotly's data and layout: one trace per family on each target, and each target's front. With
    several targets, each has a legend of its own: its title toggles the target, an entry a family."""
    group = grouping(report)
    names = sorted({group(v) for t in targets for v in _points(report, t.name)})
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    several = len(targets) > 1
    data, legends = [], []
    for i, t in enumerate(targets):
        found = _points(report, t.name)
        symbol = SYMBOLS[i % len(SYMBOLS)] if several else "circle"
        traces = [_group_trace(report, t.name, name or "model", members, {"color": colours[name], "symbol": symbol})
                  for name in names if (members := [v for v in found if group(v) == name])]  # fmt: skip
        traces += [_front_trace(report, t.name)] + ([] if several else [_knee_trace(report, t.name)])
        key = "legend" if i == 0 else f"legend{i + 1}"
        data += [{**trace, "legend": key} for trace in traces if trace["x"]]
        title = t.name if several else ("family" if group is family else "precision")
        legends.append((key, title, sum(1 for trace in traces if trace["x"])))
    return {"data": data, "layout": _layout(report, targets, legends)}


def _legends(legends: list[tuple[str, str, int]]) -> tuple[dict, int]:
    """One legend per target stacked down the right (plotly places each legend where told), and
    the plot's height that fits them. A legend's title toggles everything in it."""
    heights = [28 + 20 * entries for _, _, entries in legends]
    height = max(480, MARGIN_PX + sum(heights))
    out, top = {}, 1.0
    for (key, title, _), px in zip(legends, heights, strict=True):
        out[key] = {"title": {"text": _esc(title)}, "x": 1.02, "xanchor": "left", "y": top, "yanchor": "top",
                    "itemsizing": "constant", "titleclick": "toggle" if len(legends) > 1 else False}  # fmt: skip
        top -= px / (height - MARGIN_PX)
    return out, height


def _layout(report: Report, targets: list[TargetInfo], legends: list[tuple[str, str, int]]) -> dict:
    metric = next((v.accuracy.metric for v in report.variants if v.accuracy), "accuracy")
    if len(targets) == 1:
        t = targets[0]
        title = f"{report.recipe.name} on {t.name}"
        x_title = f"p50 latency (ms), batch {report.batch_for(t.name)}, {t.threads} thread(s)"
    else:
        title, x_title = f"{report.recipe.name} across targets", "p50 latency (ms), each target's batch"
    lats = [v.latency_at(t.name, report.batch_for(t.name)).p50_ms for t in targets for v in _points(report, t.name)]
    wide = bool(lats) and max(lats) > 10 * min(lats)  # orders of magnitude apart: a log axis keeps both readable
    boxes, height = _legends(legends)
    return {"title": {"text": _esc(title)}, "hovermode": "closest", "height": height, "plot_bgcolor": "white",
            "xaxis": {"title": {"text": x_title}, "type": "log" if wide else "linear", "gridcolor": "#e5e5e5"},
            "yaxis": {"title": {"text": _esc(f"{metric} (%)")}, "gridcolor": "#e5e5e5"},
            "margin": {"t": 50, "r": 20, "b": 50, "l": 60}, **boxes}  # fmt: skip


def plot_div(fig: dict, div_id: str) -> str:
    """A div and the script that draws `fig` into it (plotly.js must be loaded before)."""
    args = ", ".join(_json(x) for x in (div_id, fig["data"], fig["layout"], CONFIG))
    return f'<div id="{div_id}" class="plot"></div><script>Plotly.newPlot({args});</script>'


def _json(value) -> str:
    """JSON safe inside <script>: no '<' that could close the tag early."""
    return json.dumps(value).replace("<", "\\u003c")
