"""What the gates found, and what they refuse to judge.

A gate with nothing to check is an error (exit 2), never a silent pass: a variant without the
accuracy or latency a gate needs, a latency timed under other load, a baseline from other hardware.
The last two may be judged anyway when the user allows it; then a warning says so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from compress.errors import UsageError
from compress.report.schema import Accuracy, Latency, Report, Variant


@dataclass
class GateResult:
    gate: str
    variant: str
    limit: str
    value: str
    passed: bool
    detail: str = ""
    status: str = ""  # shown instead of pass / FAIL, e.g. "new: not in baseline"

    @property
    def verdict(self) -> str:
        return self.status or ("pass" if self.passed else "FAIL")


def need_accuracy(gate: str, v: Variant, where: str = "") -> Accuracy:
    """`where` places the variant, e.g. " in the baseline report"."""
    if v.accuracy is None:
        raise UsageError(f"{gate}: variant {v.name}{where} has no accuracy",
                         hint="gate only variants with an accuracy (--variant), or drop this gate")  # fmt: skip
    return v.accuracy


def need_latency(gate: str, v: Variant, where: str = "") -> list[Latency]:
    if not v.latency:
        raise UsageError(f"{gate}: variant {v.name}{where} has no latency",
                         hint="gate only measured variants (--variant), or drop this gate")  # fmt: skip
    return v.latency


@dataclass
class Judge:
    """Refuses what cannot be judged fairly, unless allowed; then `warn` says it was judged anyway."""

    allow_disturbed: bool = False
    allow_different_hardware: bool = False
    warn: Callable[[str], None] = field(default=lambda message: None)

    def trust(self, gate: str, variant: str, lat: Latency, where: str = "") -> None:
        """A latency timed while other load ran on the machine says nothing about the model."""
        if not lat.disturbed:
            return
        reason = (f"{gate}: the latency of variant {variant}{where} on target {lat.target} (batch {lat.batch_size}) "
                  f"was timed under other load: {lat.disturbance or 'no reason recorded'}")  # fmt: skip
        if not self.allow_disturbed:
            raise UsageError(
                reason, hint="measure again on a quiet machine, or judge it with `compress gate --allow-disturbed`"
            )
        self.warn(f"{reason}; judged anyway (--allow-disturbed)")

    def same_setup(self, new: Report, old: Report) -> None:
        """Regressions compare like with like: the same CPU and the same runtime versions."""
        differences = setup_differences(new, old)
        if not differences:
            return
        reason = "different hardware or runtime versions: " + "; ".join(differences)
        if not self.allow_different_hardware:
            raise UsageError(f"regression gates refuse reports from {reason}",
                             hint="use a baseline measured on the same machine and runtimes, "
                                  "or pass --allow-different-hardware")  # fmt: skip
        self.warn(f"{reason}; compared anyway (--allow-different-hardware)")


def setup_differences(new: Report, old: Report) -> list[str]:
    out = []
    cpu_new, cpu_old = _cpu_model(new), _cpu_model(old)
    if cpu_new and cpu_old and cpu_new != cpu_old:
        out.append(f"CPU {cpu_old} in the baseline, {cpu_new} in this report")
    for target in new.targets:
        was = next((t for t in old.targets if t.name == target.name), None)
        if was is None or was.versions == target.versions:
            continue
        keys = sorted(k for k in {*was.versions, *target.versions} if was.versions.get(k) != target.versions.get(k))
        out.append(f"target {target.name}: runtime versions {_versions(was.versions, keys)} in the baseline, "
                   f"{_versions(target.versions, keys)} in this report")  # fmt: skip
    return out


def _cpu_model(report: Report) -> str | None:
    cpu = report.environment.get("cpu")
    return cpu.get("model") if isinstance(cpu, dict) else None


def _versions(versions: dict[str, str], keys: list[str]) -> str:
    return ", ".join(f"{k} {versions.get(k, '–')}" for k in keys)
