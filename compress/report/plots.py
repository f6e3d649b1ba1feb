"""Accuracy vs p50 latency, one image per target: marker area by file size, front drawn, labelled."""

from __future__ import annotations

import io
from pathlib import Path

from compress.names import file_name
from compress.report.schema import Report, write_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def label(text: str) -> str:
    """Text as written: matplotlib reads what lies between two `$` as math (and fails on most names)."""
    return str(text).replace("$", r"\$")


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def family(variant) -> str:
    """The family a variant is coloured by: the architecture of its `models:` entry."""
    return str(variant.details.get("arch", ""))


# Where a label may sit around its point, in points (dx, dy, horizontal alignment), nearest first.
OFFSETS = [(8, 6, "left"), (8, -22, "left"), (-8, 6, "right"), (-8, -22, "right"), (8, 20, "left"),
           (8, -36, "left"), (-8, 20, "right"), (-8, -36, "right"), (8, 34, "left"), (8, -50, "left")]  # fmt: skip


def _shared(a, b) -> float:
    return max(0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0, min(a.y1, b.y1) - max(a.y0, b.y0))


def _clash(box, placed, frame) -> float:
    """How badly a label box sits: the area it shares with labels placed before, plus its area
    outside the axes (where it would run into the tick labels)."""
    return sum(_shared(box, b) for b in placed) + box.width * box.height - _shared(box, frame)


def place_labels(ax, labels: list[tuple[float, float, str]]) -> None:
    """Annotate each (x, y, text) at the first offset whose box, measured by the renderer, overlaps no
    label placed before it and stays inside the axes (else at the offset that clashes least). The same
    points give the same plot. Labels stay out of the layout, so a later tight_layout keeps the scale
    they were placed at."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed = [legend.get_window_extent(renderer)] if legend else []  # labels keep off the legend too
    for x, y, text in labels:
        best = None
        for dx, dy, align in OFFSETS:
            note = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=align)
            note.set_in_layout(False)
            box = note.get_window_extent(renderer).padded(2)  # a gap that survives the final layout's rescale
            cost = _clash(box, placed, frame)
            if best is None or cost < best[0]:
                if best:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost == 0:
                break
        placed.append(best[2])


def pareto_figure(report: Report, target_name: str):
    """The matplotlib figure of accuracy vs p50 on one target, labels placed apart."""
    plt = _pyplot()

    target = next(t for t in report.targets if t.name == target_name)
    batch = report.batch_for(target.name)
    points = []
    for v in report.variants:
        acc, lat = v.accuracy_on(target.name), v.latency_at(target.name, batch)
        if acc and lat:
            points.append((lat.p50_ms, acc.value, v.size_bytes, v.name, v.pareto.get(target.name, False), family(v)))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    biggest = max((p[2] for p in points), default=1)
    families = sorted({p[5] for p in points})
    colors = dict(zip(families, plt.get_cmap("tab10").colors, strict=False))
    for lat, acc, size, _, on, fam in sorted(points):
        ax.scatter(lat, acc, s=60 + 600 * size / biggest, alpha=0.6, color=colors[fam],
                   edgecolors="black", linewidths=1.8 if on else 0.5,
                   label=label(fam) if len(families) > 1 else None)  # fmt: skip
    chosen = report.front(target.name)
    knee = next((p for p in points if chosen and p[3] == chosen.knee), None)
    if knee:
        ax.scatter(knee[0], knee[1], marker="*", s=260, color="gold", edgecolors="black", zorder=5, label="knee")
    front = sorted((p[0], p[1]) for p in points if p[4])
    if front:
        ax.plot([f[0] for f in front], [f[1] for f in front], "--", color="black", alpha=0.6, label="Pareto front")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8, markerscale=0.4)
    ax.set_xlabel(f"p50 latency (ms), batch {batch}, {target.threads} thread(s)")
    metric = next((v.accuracy.metric for v in report.variants if v.accuracy), "accuracy")
    ax.set_ylabel(label(f"{metric} (%)"))
    ax.set_title(label(f"{report.recipe.name} on {target.name}"))
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()  # the final scale, before label boxes are measured
    place_labels(ax, [(p[0], p[1], f"{label(p[3])}\n{p[2] / 1e6:.2f} MB") for p in sorted(points)])
    return fig


def pareto_plot(report: Report, target_name: str) -> bytes:
    return _png(pareto_figure(report, target_name))


def plot_file(target_name: str) -> str:
    return f"pareto-{file_name(target_name)}.png"


def latency_plot(report: Report, target_name: str) -> bytes:
    """Without accuracy (a bare model profiled), p50 per variant and batch with its 95 % interval."""
    plt = _pyplot()

    rows = [(label(f"{v.name} @ batch {lat.batch_size}"), lat) for v in report.variants for lat in v.latency
            if lat.target == target_name]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * max(len(rows), 1)), dpi=110)
    for i, (_, lat) in enumerate(rows):
        low, high = lat.p50_ci_low_ms or lat.p50_ms, lat.p50_ci_high_ms or lat.p50_ms
        ax.barh(i, lat.p50_ms, xerr=[[lat.p50_ms - low], [high - lat.p50_ms]], color="tab:blue", alpha=0.7, capsize=4)
        ax.annotate(f"{lat.p50_ms:.4g} ms", (lat.p50_ms, i), textcoords="offset points", xytext=(6, -3), fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlabel("p50 latency (ms) with 95 % interval")
    ax.set_title(label(f"{report.recipe.name} on {target_name}"))
    ax.margins(x=0.3)
    return _png(fig)


def render_plots(report: Report) -> dict[str, bytes]:
    """One PNG per target, rendered once for both the image files and report.html: the Pareto plot,
    or latency alone where nothing had accuracy to plot against."""
    return {
        t.name: pareto_plot(report, t.name) if any(v.accuracy_on(t.name) for v in report.variants)
        else latency_plot(report, t.name)
        for t in report.targets
    }  # fmt: skip


def write_plots(report: Report, folder: Path, plots: dict[str, bytes] | None = None) -> list[Path]:
    paths = []
    for name, png in (plots or render_plots(report)).items():
        path = folder / plot_file(name)
        write_atomic(path, png)
        paths.append(path)
    return paths
