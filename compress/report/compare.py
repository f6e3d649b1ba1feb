"""What changed between two reports: size, latency and accuracy per variant and target."""

from __future__ import annotations

from compress.report.schema import Report

MB = 1_000_000


def _change(old: float | None, new: float | None, unit: str, digits: int = 3, relative: bool = True) -> str:
    if old is None and new is None:
        return "–"
    if old is None:
        return f"new: {new:.{digits}f}{unit}"
    if new is None:
        return f"gone (was {old:.{digits}f}{unit})"
    if relative and old:
        return f"{old:.{digits}f} → {new:.{digits}f}{unit} ({100 * (new - old) / old:+.1f}%)"
    return f"{old:.{digits}f} → {new:.{digits}f}{unit} ({new - old:+.2f})"


def compare_rows(old: Report, new: Report) -> list[tuple[str, str, str, str, str]]:
    """(variant, target, size, p50 at the Pareto batch, metric) for every variant in either report."""
    names = [v.name for v in new.variants] + [v.name for v in old.variants if not new.variant(v.name)]
    targets = [t.name for t in new.targets] + [
        t.name for t in old.targets if t.name not in {x.name for x in new.targets}
    ]
    rows = []
    for name in names:
        a, b = old.variant(name), new.variant(name)
        size = _change(a.size_bytes / MB if a else None, b.size_bytes / MB if b else None, " MB")
        for target in targets:
            la = a.latency_at(target, old.batch_for(target)) if a else None
            lb = b.latency_at(target, new.batch_for(target)) if b else None
            acc_a, acc_b = (a.accuracy_on(target) if a else None), (b.accuracy_on(target) if b else None)
            rows.append((name, target, size, _change(la.p50_ms if la else None, lb.p50_ms if lb else None, " ms"),
                         _change(acc_a.value if acc_a else None, acc_b.value if acc_b else None, "", 2, False)))  # fmt: skip
    return rows
