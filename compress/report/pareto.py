"""Accuracy-latency Pareto fronts: a variant is on the front when no other is at least as accurate
and at least as fast, and strictly better in one of the two."""

from __future__ import annotations

from compress.report.schema import Report


def front(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names on the front of {name: (accuracy, latency)}; higher accuracy and lower latency win."""
    on = set()
    for name, (acc, lat) in points.items():
        dominated = any(
            a >= acc and t <= lat and (a > acc or t < lat) for other, (a, t) in points.items() if other != name
        )
        if not dominated:
            on.add(name)
    return on


def mark_fronts(report: Report) -> None:
    """Set `variant.pareto[target]` from accuracy and p50 at the report's Pareto batch size."""
    for target in report.targets:
        batch = report.pareto_batch_size if report.pareto_batch_size in target.batch_sizes else min(target.batch_sizes)
        points = {}
        for v in report.variants:
            acc, lat = v.accuracy_on(target.name), v.latency_at(target.name, batch)
            if acc is not None and lat is not None:
                points[v.name] = (acc.value, lat.p50_ms)
        on = front(points)
        for v in report.variants:
            v.pareto[target.name] = v.name in on
