"""Pareto fronts. A point is on the front when no other is at least as good in every objective and
strictly better in one. Objectives: accuracy (higher), latency at p50 or p90 (lower), and
optionally file size (lower). Fronts are computed per target and across targets (each
variant-on-target pair a point), and the knee of each is suggested."""

from __future__ import annotations

from compress.report.schema import Front, Report

Point = tuple[float, ...]  # (accuracy, latency[, size]); accuracy is maximised, the rest minimised


def _dominates(a: Point, b: Point) -> bool:
    better_or_equal = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:], strict=True))
    return better_or_equal and a != b


def front(points: dict[str, Point]) -> set[str]:
    """Names on the front of {name: (accuracy, latency[, size])}."""
    return {n for n, p in points.items() if not any(_dominates(q, p) for m, q in points.items() if m != n)}


def knee(points: dict[str, Point], members: set[str]) -> str | None:
    """The front member farthest from the line joining its extremes (accuracy vs latency, both
    scaled to [0, 1]): where a little more latency stops buying much accuracy."""
    ranked = sorted(members, key=lambda n: points[n][1])
    if len(ranked) < 3:
        return max(ranked, key=lambda n: points[n][0]) if ranked else None
    accs = [points[n][0] for n in ranked]
    lats = [points[n][1] for n in ranked]
    span_a, span_l = (max(accs) - min(accs)) or 1.0, (max(lats) - min(lats)) or 1.0
    xs = [(lat - lats[0]) / span_l for lat in lats]
    ys = [(acc - min(accs)) / span_a for acc in accs]
    (x0, y0), (x1, y1) = (xs[0], ys[0]), (xs[-1], ys[-1])
    norm = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 or 1.0

    def distance(i: int) -> float:
        return abs((y1 - y0) * xs[i] - (x1 - x0) * ys[i] + x1 * y0 - y1 * x0) / norm

    return ranked[max(range(len(ranked)), key=distance)]


def _points(report: Report, target, percentile: str, with_size: bool, label: bool = False) -> dict[str, Point]:
    out = {}
    for v in report.variants:
        acc, lat = v.accuracy_on(target.name), v.latency_at(target.name, report.batch_for(target.name))
        if acc is not None and lat is not None:
            point = (acc.value, getattr(lat, f"{percentile}_ms"), *((float(v.size_bytes),) if with_size else ()))
            out[f"{v.name}@{target.name}" if label else v.name] = point
    return out


def mark_fronts(report: Report) -> None:
    """Fill `variant.pareto` (accuracy vs p50 per target) and `report.fronts` (p50 and p90, with
    and without size, per target and across targets), each with its knee."""
    report.fronts = []
    for target in report.targets:
        for percentile in ("p50", "p90"):
            for with_size in (False, True):
                points = _points(report, target, percentile, with_size)
                members = front(points)
                report.fronts.append(Front(target=target.name, latency=percentile, with_size=with_size,
                                           members=sorted(members), knee=knee(points, members)))  # fmt: skip
                if percentile == "p50" and not with_size:
                    for v in report.variants:
                        v.pareto[target.name] = v.name in members
    for percentile in ("p50", "p90"):
        points = {k: p for t in report.targets for k, p in _points(report, t, percentile, False, label=True).items()}
        members = front(points)
        report.fronts.append(Front(target="*", latency=percentile, with_size=False, members=sorted(members),
                                   knee=knee(points, members)))  # fmt: skip
