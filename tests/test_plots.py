"""The static Pareto plot: labels of nearly coincident points are placed apart."""

from __future__ import annotations

from compress.report.pareto import mark_fronts
from compress.report.plots import pareto_figure
from tests.test_report import sample_report, variant


def label_boxes(report, names: list[str]) -> list:
    """The rendered bounding box of each named variant's label, at the scale the PNG is saved at."""
    fig = pareto_figure(report, "t")
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    texts = {t.get_text().split("\n")[0]: t for t in ax.texts}
    return [texts[name].get_window_extent(renderer) for name in names]


def test_labels_of_nearly_coincident_points_do_not_overlap():
    """As in the quickstart: a pruned model and its INT8 file, nearly the same accuracy and latency
    (labels alternating above and below their points overlapped here)."""
    report = sample_report()
    report.variants += [variant("pruned-kd", 97.30, 0.61, 900_000, "fp32"),
                        variant("pruned-kd-int8", 97.36, 0.60, 300_000, "pruned-kd")]  # fmt: skip
    mark_fronts(report)
    first, second = label_boxes(report, ["pruned-kd", "pruned-kd-int8"])
    assert not first.overlaps(second), (first, second)


def test_no_two_labels_overlap_in_a_crowded_plot():
    report = sample_report()
    report.variants += [variant(f"v{i}", 97.0 + 0.01 * i, 0.8 + 0.002 * i, 500_000) for i in range(6)]
    mark_fronts(report)
    names = [v.name for v in report.variants]
    boxes = label_boxes(report, names)
    clashes = [
        (a, b) for i, a in enumerate(names) for j, b in enumerate(names) if i < j and boxes[i].overlaps(boxes[j])
    ]
    assert not clashes


def test_labels_keep_off_the_legend():
    """Two points in the lower right corner, where the legend sits: the second label cannot go above
    the first, nor below into the legend."""
    report = sample_report()
    lowest = min(v.accuracy.value for v in report.variants if v.accuracy)
    slowest = max(lat.p50_ms for v in report.variants for lat in v.latency)
    report.variants += [variant("corner", lowest - 0.05, slowest + 0.2, 500_000),
                        variant("beside", lowest - 0.05, slowest + 0.19, 500_000)]  # fmt: skip
    mark_fronts(report)
    fig = pareto_figure(report, "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    assert not [t.get_text() for t in ax.texts if t.get_window_extent(renderer).overlaps(legend)]
