"""CI gates: limits on size, latency and accuracy, checked against report.json (and optionally a
previous report). Torch-free, so `compress gate` runs in a slim CI job."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

from pydantic import Field, field_validator

from compress.config import Strict
from compress.report.schema import Report

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


@dataclass
class GateResult:
    gate: str
    variant: str
    limit: str
    value: str
    passed: bool
    detail: str = ""


def check(report: Report, gates: Gates, previous: Report | None = None) -> list[GateResult]:
    results: list[GateResult] = []
    chosen = [v for v in report.variants if gates.variants is None or v.name in gates.variants]
    base = report.variant(report.baseline)
    for v in chosen:
        if gates.max_size_mb is not None:
            size = v.size_bytes / MB
            results.append(GateResult("max_size_mb", v.name, f"{gates.max_size_mb:g} MB", f"{size:.3f} MB",
                                      size <= gates.max_size_mb))  # fmt: skip
        results += _latency(v, gates.max_latency_ms, report)
        results += _accuracy(v, gates, base)
        if previous is not None:
            results += _regressions(v, gates, previous.variant(v.name))
    return results


def _latency(v, limits: list[LatencyLimit], report: Report) -> list[GateResult]:
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
            value = getattr(lat, f"{limit.percentile}_ms")
            out.append(GateResult(name, v.name, f"{limit.max_ms:g} ms", f"{value:.3f} ms", value <= limit.max_ms))
    return out


def _accuracy(v, gates: Gates, base) -> list[GateResult]:
    out = []
    acc = v.accuracy
    if gates.min_accuracy is not None:
        value = acc.value if acc else None
        out.append(GateResult("min_accuracy", v.name, f"{gates.min_accuracy:g}", _fmt(value),
                              value is not None and value >= gates.min_accuracy))  # fmt: skip
    if gates.max_accuracy_drop is not None and base is not None and base.accuracy and acc:
        drop = base.accuracy.value - acc.value
        out.append(GateResult("max_accuracy_drop", v.name, f"{gates.max_accuracy_drop:g} pts",
                              f"{drop:.2f} pts", drop <= gates.max_accuracy_drop))  # fmt: skip
    return out


def _regressions(v, gates: Gates, old) -> list[GateResult]:
    if old is None:
        return []
    out = []
    if gates.max_size_regression is not None:
        change = percent_change(old.size_bytes, v.size_bytes)
        out.append(GateResult("max_size_regression", v.name, f"{gates.max_size_regression:g}%", f"{change:+.2f}%",
                              change <= gates.max_size_regression))  # fmt: skip
    if gates.max_latency_regression is not None:
        for lat in v.latency:
            prev = old.latency_at(lat.target, lat.batch_size)
            if prev:
                change = percent_change(prev.p50_ms, lat.p50_ms)
                out.append(GateResult(f"max_latency_regression[{lat.target}, batch {lat.batch_size}]", v.name,
                                      f"{gates.max_latency_regression:g}%", f"{change:+.2f}%",
                                      change <= gates.max_latency_regression))  # fmt: skip
    if gates.max_accuracy_regression is not None and v.accuracy and old.accuracy:
        drop = old.accuracy.value - v.accuracy.value
        out.append(GateResult("max_accuracy_regression", v.name, f"{gates.max_accuracy_regression:g} pts",
                              f"{drop:.2f} pts", drop <= gates.max_accuracy_regression))  # fmt: skip
    return out


def percent_change(old: float, new: float) -> float:
    """How much larger `new` is than `old`, in percent; from 0, any growth is infinite."""
    if old == 0:
        return 0.0 if new == old else math.copysign(math.inf, new)
    return 100.0 * (new - old) / old


def check_model_file(path: Path, max_size_mb: float) -> GateResult:
    """The size gate on a bare model file (ONNX, IR .xml with its .bin, engine, ...)."""
    files = [
        path,
        *([path.with_suffix(".bin")] if path.suffix == ".xml" and path.with_suffix(".bin").is_file() else []),
    ]
    size = sum(f.stat().st_size for f in files) / MB
    return GateResult("max_size_mb", path.name, f"{max_size_mb:g} MB", f"{size:.3f} MB", size <= max_size_mb)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def junit_xml(results: list[GateResult], suite: str = "compress-gates") -> str:
    failures = sum(not r.passed for r in results)
    cases = []
    for r in results:
        name = escape(f"{r.gate} [{r.variant}]", {'"': "&quot;"})
        body = (
            ""
            if r.passed
            else f'<failure message="{escape(f"{r.value} exceeds {r.limit}", {chr(34): "&quot;"})}">{escape(r.detail)}</failure>'
        )
        cases.append(f'  <testcase classname="{suite}" name="{name}">{body}</testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="{suite}" tests="{len(results)}" '
            f'failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")  # fmt: skip


def markdown(results: list[GateResult]) -> str:
    passed = all(r.passed for r in results)
    lines = [f"### compress gates: {'passed' if passed else 'FAILED'}", "",
             "| gate | variant | limit | value | verdict |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {r.gate} | {r.variant} | {r.limit} | {r.value} | {'pass' if r.passed else '**fail**'} |" for r in results
    ]
    return "\n".join(lines) + "\n"
