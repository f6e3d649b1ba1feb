"""Regression gates: a report against a previous one (`compress gate --baseline OLD.json`).

Every variant shows up: one new since the baseline gets a passing "new: not in baseline" row, one
(or a latency) gone from this report a failing row. Latency counts as slower only when the 95 %
intervals of p50 say so, or on point p50 when a report has no intervals."""

from __future__ import annotations

from compress.errors import UsageError
from compress.report.schema import Latency, Report, Variant
from compress.report.verdicts import GateResult, Judge, need_accuracy, need_latency

MB = 1_000_000
GATES = ("max_size_regression", "max_latency_regression", "max_accuracy_regression")
NEW, GONE = "new: not in baseline", "gone: not in this report"
BASELINE = " in the baseline report"


def regressions(new: Report, old: Report, limits: dict[str, float], chosen: list[Variant], judge: Judge,
                every_variant: bool) -> list[GateResult]:  # fmt: skip
    """`limits`: regression gate -> limit; `every_variant`: no --variant, so a variant gone since the
    baseline fails."""
    if not limits:
        return []
    if set(limits) - {"max_size_regression"}:
        judge.same_setup(new, old)
    out = []
    for v in chosen:
        was = old.variant(v.name)
        if was is None:
            out += [_row(gate, v.name, limit, NEW) for gate, limit in limits.items()]
            continue
        out += _size(v, was, limits.get("max_size_regression"))
        out += _latency(v, was, limits.get("max_latency_regression"), judge)
        out += _accuracy(v, was, limits.get("max_accuracy_regression"))
    gone = [w for w in old.variants if every_variant and not w.errors and new.variant(w.name) is None]
    return out + [_row(gate, w.name, limit, GONE) for w in gone for gate, limit in limits.items()]


def _row(gate: str, variant: str, limit: float, status: str) -> GateResult:
    unit = " pts" if gate == "max_accuracy_regression" else "%"
    return GateResult(gate, variant, f"{limit:g}{unit}", "–", status == NEW, status, status)


def percent_change(gate: str, what: str, old: float, new: float) -> float:
    if old <= 0:
        raise UsageError(f"{gate}: {what} is {old:g} in the baseline; a change in percent cannot be computed",
                         hint="use a baseline report that measured it")  # fmt: skip
    return 100.0 * (new - old) / old


def _size(v: Variant, was: Variant, limit: float | None) -> list[GateResult]:
    if limit is None:
        return []
    change = percent_change("max_size_regression", f"the size of {v.name}", was.size_bytes, v.size_bytes)
    value = f"{v.size_bytes / MB:.3f} vs {was.size_bytes / MB:.3f} MB ({change:+.2f}%)"
    return [GateResult("max_size_regression", v.name, f"{limit:g}%", value, change <= limit)]


def _latency(v: Variant, was: Variant, limit: float | None, judge: Judge) -> list[GateResult]:
    if limit is None:
        return []
    gate = "max_latency_regression"
    need_latency(gate, v), need_latency(gate, was, BASELINE)
    out = []
    for lat in v.latency:
        name = f"{gate}[{lat.target}, batch {lat.batch_size}]"
        prev = was.latency_at(lat.target, lat.batch_size)
        if prev is None:
            out.append(_row(name, v.name, limit, NEW))
            continue
        judge.trust(gate, v.name, lat)
        judge.trust(gate, v.name, prev, BASELINE)
        out.append(_latency_row(name, v.name, lat, prev, limit))
    gone = [p for p in was.latency if v.latency_at(p.target, p.batch_size) is None]
    return out + [_row(f"{gate}[{p.target}, batch {p.batch_size}]", v.name, limit, GONE) for p in gone]


def _latency_row(name: str, variant: str, lat: Latency, prev: Latency, limit: float) -> GateResult:
    what = f"p50 of {variant} on {lat.target} (batch {lat.batch_size})"
    change = percent_change("max_latency_regression", what, prev.p50_ms, lat.p50_ms)
    if _interval(lat) and _interval(prev):
        slower = lat.p50_ci_low_ms > prev.p50_ci_high_ms * (1 + limit / 100)
        detail = "judged on the 95 % intervals of p50"
    else:
        slower = change > limit
        detail = "judged on point p50: a report has no confidence intervals"
    value = f"{_p50(lat)} vs {_p50(prev)} ms ({change:+.2f}%)"
    return GateResult(name, variant, f"{limit:g}%", value, not slower, detail)


def _interval(lat: Latency) -> bool:
    return lat.p50_ci_low_ms is not None and lat.p50_ci_high_ms is not None


def _p50(lat: Latency) -> str:
    interval = f" [{lat.p50_ci_low_ms:.3f}, {lat.p50_ci_high_ms:.3f}]" if _interval(lat) else ""
    return f"{lat.p50_ms:.3f}{interval}"


def _accuracy(v: Variant, was: Variant, limit: float | None) -> list[GateResult]:
    if limit is None:
        return []
    gate = "max_accuracy_regression"
    value = need_accuracy(gate, v).value
    drop = need_accuracy(gate, was, BASELINE).value - value
    return [GateResult(gate, v.name, f"{limit:g} pts", f"{drop:.2f} pts", drop <= limit)]
