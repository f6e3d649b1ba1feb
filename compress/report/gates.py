"""CI gates: limits on size, latency and accuracy, checked against report.json (and optionally a
previous report). Torch-free, so `compress gate` runs in a slim CI job."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

from pydantic import Field, field_validator

from compress.config import Strict
from compress.errors import UsageError
from compress.report.regressions import GATES as REGRESSION_GATES
from compress.report.regressions import regressions
from compress.report.schema import Report, Variant
from compress.report.verdicts import GateResult, Judge, need_accuracy

__all__ = ["GateResult", "Gates", "LatencyLimit", "check", "check_model_file", "junit_xml", "markdown"]

MB = 1_000_000


def parse_percent(value: float | str | None) -> float | None:
    """'5%' -> 5.0, 5 -> 5.0; regressions are in percent of the old value."""
    if value is None or isinstance(value, (int, float)):
        return value
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*%?\s*", value)
    if not match:
        raise ValueError(f"expected a percentage such as '5%', got {value!r}")
    return float(match.group(1))


class LatencyLimit(Strict):
    max_ms: float = Field(gt=0)
    target: str | None = Field(None, description="default: every target")
    percentile: Literal["p50", "p90", "p99"] = "p50"
    batch_size: int = Field(1, ge=1)


class Gates(Strict):
    """Limits a CI job enforces; each applies to every variant unless `variants` names some."""

    variants: list[str] | None = None
    max_size_mb: float | None = Field(None, gt=0)
    max_latency_ms: list[LatencyLimit] = Field(default_factory=list)
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = Field(None, ge=0, description="points below the baseline variant")
    max_latency_regression: float | None = Field(None, description="percent slower than the previous report")
    max_size_regression: float | None = Field(None, description="percent larger than the previous report")
    max_accuracy_regression: float | None = Field(None, ge=0, description="points below the previous report")

    @field_validator("max_latency_regression", "max_size_regression", mode="before")
    @classmethod
    def _percent(cls, value):
        return parse_percent(value)

    def empty(self) -> bool:
        return not any(v not in (None, []) for k, v in self.model_dump().items() if k != "variants")

    def regression_limits(self) -> dict[str, float]:
        """The regression gates set, each with its limit; they need a previous report."""
        return {gate: getattr(self, gate) for gate in REGRESSION_GATES if getattr(self, gate) is not None}


def check(report: Report, gates: Gates, previous: Report | None = None, *, allow_disturbed: bool = False,
          allow_different_hardware: bool = False, warn: Callable[[str], None] | None = None) -> list[GateResult]:  # fmt: skip
    """Every gate on every chosen variant, and the regressions against `previous` when given.
    Raises UsageError when a gate has nothing to check or a measurement cannot be judged."""
    judge = Judge(allow_disturbed, allow_different_hardware, warn or (lambda message: None))
    chosen = _chosen(report, gates)
    results: list[GateResult] = []
    for v in chosen:
        if v.errors:  # a sweep point that failed has nothing to measure: it fails every gate
            results.append(GateResult("variant", v.name, "no errors", "failed", False, v.errors[0]))
            continue
        results += _size(v, gates) + _latency(v, gates.max_latency_ms, report, judge) + _accuracy(v, gates, report)
    if previous is not None:
        healthy = [v for v in chosen if not v.errors]
        results += regressions(report, previous, gates.regression_limits(), healthy, judge,
                               every_variant=gates.variants is None)  # fmt: skip
    return results


def _chosen(report: Report, gates: Gates) -> list[Variant]:
    names = [v.name for v in report.variants]
    if not names:
        raise UsageError("the report has no variants", hint="gate the report of a run that produced models")
    unknown = [n for n in gates.variants or () if n not in names]
    if unknown:
        raise UsageError(f"unknown variant {', '.join(unknown)}; the report has {', '.join(names)}",
                         hint="--variant (or the gates' variants) takes names from the report")  # fmt: skip
    if gates.variants == []:
        raise UsageError("the gates' variants list is empty", hint="name some variants, or drop the key")
    return [v for v in report.variants if gates.variants is None or v.name in gates.variants]


def _size(v: Variant, gates: Gates) -> list[GateResult]:
    if gates.max_size_mb is None:
        return []
    size = v.size_bytes / MB
    return [GateResult("max_size_mb", v.name, f"{gates.max_size_mb:g} MB", f"{size:.3f} MB", size <= gates.max_size_mb)]


def _latency(v: Variant, limits: list[LatencyLimit], report: Report, judge: Judge) -> list[GateResult]:
    out = []
    for limit in limits:
        targets = [limit.target] if limit.target else [t.name for t in report.targets]
        for target in targets:
            lat = v.latency_at(target, limit.batch_size)
            name = f"max_latency_ms[{target}, {limit.percentile}, batch {limit.batch_size}]"
            if lat is None:
                out.append(GateResult(name, v.name, f"{limit.max_ms:g} ms", "not measured", False,
                                      "no latency for this target and batch size"))  # fmt: skip
                continue
            judge.trust("max_latency_ms", v.name, lat)
            value = getattr(lat, f"{limit.percentile}_ms")
            out.append(GateResult(name, v.name, f"{limit.max_ms:g} ms", f"{value:.3f} ms", value <= limit.max_ms))
    return out


def _accuracy(v: Variant, gates: Gates, report: Report) -> list[GateResult]:
    out = []
    if gates.min_accuracy is not None:
        value = need_accuracy("min_accuracy", v).value
        out.append(GateResult("min_accuracy", v.name, f"{gates.min_accuracy:g}", f"{value:.2f}",
                              value >= gates.min_accuracy))  # fmt: skip
    if gates.max_accuracy_drop is not None:
        base = report.variant(report.baseline)
        if base is None:
            raise UsageError(f"max_accuracy_drop: the baseline variant {report.baseline} is not in the report",
                             hint=f"the report has {', '.join(x.name for x in report.variants)}")  # fmt: skip
        value = need_accuracy("max_accuracy_drop", v).value
        drop = need_accuracy("max_accuracy_drop", base, " (the baseline)").value - value
        out.append(GateResult("max_accuracy_drop", v.name, f"{gates.max_accuracy_drop:g} pts",
                              f"{drop:.2f} pts", drop <= gates.max_accuracy_drop))  # fmt: skip
    return out


def check_model_file(path: Path, max_size_mb: float) -> GateResult:
    """The size gate on a bare model file (ONNX, IR .xml with its .bin, engine, ...)."""
    files = [
        path,
        *([path.with_suffix(".bin")] if path.suffix == ".xml" and path.with_suffix(".bin").is_file() else []),
    ]
    size = sum(f.stat().st_size for f in files) / MB
    return GateResult("max_size_mb", path.name, f"{max_size_mb:g} MB", f"{size:.3f} MB", size <= max_size_mb)


def junit_xml(results: list[GateResult], suite: str = "compress-gates") -> str:
    failures = sum(not r.passed for r in results)
    cases = [f'  <testcase classname="{suite}" name="{_attr(f"{r.gate} [{r.variant}]")}">{_junit_body(r)}</testcase>'
             for r in results]  # fmt: skip
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="{suite}" tests="{len(results)}" '
            f'failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")  # fmt: skip


def _junit_body(r: GateResult) -> str:
    if r.passed:
        return f'<skipped message="{_attr(r.status)}"/>' if r.status else ""
    return f'<failure message="{_attr(r.status or f"{r.value} exceeds {r.limit}")}">{escape(r.detail)}</failure>'


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def markdown(results: list[GateResult], warnings: list[str] | tuple[str, ...] = ()) -> str:
    passed = all(r.passed for r in results)
    lines = [f"### compress gates: {'passed' if passed else 'FAILED'}", "",
             *(f"> **warning:** {w}" for w in warnings), *([""] if warnings else []),
             "| gate | variant | limit | value | verdict |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r.gate} | {r.variant} | {r.limit} | {r.value} | {_md_verdict(r)} |" for r in results]
    return "\n".join(lines) + "\n"


def _md_verdict(r: GateResult) -> str:
    verdict = r.status or ("pass" if r.passed else "fail")
    return verdict if r.passed else f"**{verdict}**"
