"""The schema of report.json. Torch-free, so reports can be read, re-rendered and gated anywhere."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field

from compress.config import Strict
from compress.errors import UsageError, writing
from compress.report.details import AccuracyControl, Pruning, Quantization

SCHEMA_VERSION = 1


class Accuracy(Strict):
    metric: str
    value: float  # points (percent)
    split: str
    runtime: str
    target: str
    samples: int
    details: dict[str, float] | None = None  # further figures in points (detection: mAP@.5, mAP@.75)
    held_out: dict[str, float] | None = None  # the metric on each of data.held_out's sets, by name


class LayerProfile(Strict):
    """Where one call's time goes, from the runtime's own profiler (see agent.parts): ms per op type
    and of the slowest layers, scaled to the entry's p50; the whole profile is in `trace`."""

    by_op: dict[str, float]  # op type as the runtime names it (after fusion) -> ms, slowest first
    top: list[dict[str, Any]]  # the slowest layers: {"name", "op", "ms"}
    profiled_ms: float  # the profiled total (the profiler's overhead included)
    nodes: int  # executed nodes
    trace: str | None = None  # every node's time, relative to the report folder

    def share(self, ops: set[str]) -> float:
        """The share of the time spent in these op types."""
        total = sum(self.by_op.values())
        return sum(ms for op, ms in self.by_op.items() if op in ops) / total if total else 0.0


class Latency(Strict):
    target: str
    runtime: str
    batch_size: int
    threads: int
    precision: str  # what the runtime computed in, as configured
    provider: str | None = None  # what executed it: ONNX Runtime's execution provider, OpenVINO's device
    shapes: str | None = None  # OpenVINO: compiled for the timed input shapes ("static") or for any
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    iterations: int
    seconds: float
    throughput: float  # items per second: batch / mean latency, or with `requests` in parallel
    requests: int | None = None  # requests in flight when throughput was measured (OpenVINO streams)
    capped: bool = False  # the time cap ended measuring before the protocol was met
    p50_ci_low_ms: float | None = None  # 95 % confidence interval of p50
    p50_ci_high_ms: float | None = None
    stable: bool | None = None  # the interval met the protocol's ci_target
    disturbed: bool | None = None  # other load on the machine while timing (see agent.profiling)
    disturbance: str | None = None  # why it was flagged
    runtime_summary: dict[str, Any] | None = None  # the runtime's own figures (trtexec: GPU compute, H2D, D2H)
    cpu_share: float | None = None  # the measuring process's CPU seconds per wall second while timing
    others_cpu_share: float | None = None  # other processes' CPU while timing, as a share of the cores left free
    steal_share: float | None = None  # CPU the hypervisor gave to other guests, as a share of all cores
    load_avg: float | None = None  # the highest 1-minute load average seen while timing
    # Where the time goes: ms per part of the model (agent.parts), scaled to sum to p50_ms, and the
    # parts' sum as profiled (the profiler's overhead included). Measured at one batch size per target.
    parts: dict[str, float] | None = None
    parts_profiled_ms: float | None = None
    layers: LayerProfile | None = None  # at the smallest batch measured on the target
    profile_error: str | None = None  # why the runtime's profiler gave nothing
    # A fleet target's boards (hosts:) this entry was measured on, each with its own p50 in ms: one
    # board when the fleet spreads variants, all of them when it merges their distributions.
    boards: dict[str, float] | None = None


class Variant(Strict):
    name: str
    stages: list[str]  # the chain of stages that produced it
    parent: str | None = None  # the variant it was derived from
    format: str
    precision: str
    path: str
    size_bytes: int
    params: int | None = None
    macs: int | None = None  # multiply-accumulates per example
    accuracy: Accuracy | None = None  # on the first target
    accuracy_per_target: list[Accuracy] = Field(default_factory=list)
    latency: list[Latency] = Field(default_factory=list)
    pareto: dict[str, bool] = Field(default_factory=dict)  # target -> on the accuracy-latency front
    speedup_vs_parent: dict[str, float] = Field(default_factory=dict)  # target -> parent p50 / own p50
    details: dict[str, Any] = Field(default_factory=dict)  # stage settings, e.g. quantization types
    errors: list[str] = Field(default_factory=list)

    def accuracy_control(self) -> AccuracyControl | None:
        return AccuracyControl.of(self.details)

    def quantization(self) -> Quantization | None:
        # precision and format live on the variant itself, not in its details
        return Quantization.of({**self.details, "precision": self.precision, "format": self.format})

    def pruning(self) -> Pruning | None:
        found = self.details.get("pruning")
        return Pruning.model_validate(found) if found else None

    def latency_at(self, target: str, batch_size: int) -> Latency | None:
        return next((x for x in self.latency if x.target == target and x.batch_size == batch_size), None)

    def accuracy_on(self, target: str) -> Accuracy | None:
        return next((a for a in self.accuracy_per_target if a.target == target), None)


class Board(Strict):
    """One board of a fleet target (hosts:): where it is, what it measured, its state."""

    name: str
    host: str  # user@address:port
    variants: list[str] = Field(default_factory=list)  # the variants it measured
    versions: dict[str, str] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)  # before its first job and after its last
    error: str | None = None  # why it dropped out; the others went on without it


class TargetInfo(Strict):
    name: str
    runtime: str
    device: str
    threads: int
    batch_sizes: list[int] = Field(min_length=1)
    protocol: dict[str, Any]
    versions: dict[str, str] = Field(default_factory=dict)
    host: str | None = None  # user@address:port of a remote device
    state: dict[str, Any] = Field(default_factory=dict)  # the device's state before / after, power
    error: str | None = None  # set when the target could not be measured at all
    boards: list[Board] | None = None  # a fleet target's boards
    fleet: str | None = None  # how the fleet measured: spread or merged (apart makes one target per board)


class Front(Strict):
    target: str  # a target name, or "*" for the front across targets (members are variant@target)
    latency: str  # "p50" or "p90"
    with_size: bool  # file size as a third objective
    members: list[str]
    knee: str | None = None  # the suggested trade-off


class StageFailure(Strict):
    """A stage that failed; the stages depending on it were skipped, the others ran."""

    stage: str
    point: str = ""  # the sweep point, if any
    message: str
    hint: str | None = None
    log: str | None = None  # the full traceback of an unexpected error

    def line(self) -> str:
        where = f"stage '{self.stage}'" + (f" (sweep point {self.point})" if self.point else "")
        return f"{where} failed: {self.message}"


class RecipeInfo(Strict):
    name: str
    path: str | None
    hash: str


class Trial(Strict):
    """One trial of a search: its settings and what its candidate measured on the search target,
    beside the baseline measured in the same job, on the validation split."""

    number: int
    label: str  # the point label its variants carry (t0, t1, ...)
    params: dict[str, Any]
    candidate: str | None = None  # the candidate variant's name in this report
    val_accuracy: float | None = None
    baseline_val_accuracy: float | None = None
    size_mb: float | None = None
    p50_ms: float | None = None
    baseline_p50_ms: float | None = None
    feasible: bool = False
    violations: list[str] = Field(default_factory=list)  # the limits it broke, in words
    # the trial's other candidates as measured beside it (by their names in the trial): val_accuracy,
    # p50_ms, size_mb, feasible
    others: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seconds: float = 0.0  # what the trial cost: its stages and its measurement
    error: str | None = None


class SearchResult(Strict):
    target: str
    batch_size: int
    minimize: str  # p50 (as a ratio to the baseline's, measured together) or size
    limits: dict[str, float]  # max_accuracy_drop (points, validation), max_size_mb, max_latency_ms
    sampler: str
    val_examples: int | None = None  # the validation split the limits were judged on
    trials: list[Trial] = Field(default_factory=list)
    best: int | None = None  # the winning trial's number
    why: str = ""  # why the winner won, in words


class Report(Strict):
    schema_version: int = SCHEMA_VERSION
    created: str
    recipe: RecipeInfo
    environment: dict[str, Any]
    baseline: str
    pareto_batch_size: int = 1
    targets: list[TargetInfo]
    variants: list[Variant]
    warnings: list[str] = Field(default_factory=list)
    gates: dict[str, Any] | None = None  # the recipe's gates, so `compress gate` can reuse them
    cache: dict[str, int] = Field(default_factory=dict)  # stage results reused / computed in this run
    fronts: list[Front] = Field(default_factory=list)
    failures: list[StageFailure] = Field(default_factory=list)  # stages that failed in this run
    # what a deployment does to an image before the model (compress.data.preprocess); None for text
    preprocessing: dict[str, Any] | None = None
    # peak resident memory (MB) of this run's process
    memory: dict[str, float] = Field(default_factory=dict)
    search: SearchResult | None = None  # the recipe's search: every trial and the winner

    def front(self, target: str, latency: str = "p50", with_size: bool = False) -> Front | None:
        return next(
            (f for f in self.fronts if (f.target, f.latency, f.with_size) == (target, latency, with_size)), None
        )

    def batch_for(self, target: str) -> int:
        """The batch size the fronts and main tables use on `target`: the Pareto batch size when that
        target measured it, else its smallest."""
        info = next((t for t in self.targets if t.name == target), None)
        if info is None or self.pareto_batch_size in info.batch_sizes:
            return self.pareto_batch_size
        return min(info.batch_sizes)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def save(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Report:
        """Read a report.json; a file that is not one is a UsageError saying why."""
        from pydantic import ValidationError

        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            version = data.get("schema_version", SCHEMA_VERSION) if isinstance(data, dict) else SCHEMA_VERSION
            if version != SCHEMA_VERSION:
                raise UsageError(f"{path} has schema_version {version}; this compress reads {SCHEMA_VERSION}",
                                 hint="read it with the compress version that wrote it")  # fmt: skip
            return cls.model_validate(data)
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 text (byte {exc.start})"
        except json.JSONDecodeError as exc:
            reason = f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        except RecursionError:
            reason = "nested too deeply"
        except ValidationError as exc:
            first, count = exc.errors()[0], exc.error_count()
            where = ".".join(map(str, first["loc"]))
            more = f" (and {count - 1} more)" if count > 1 else ""
            reason = f"{where + ': ' if where else ''}{first['msg']}{more}"
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        raise UsageError(f"{path} is not a compress report: {reason}",
                         hint="pass the report.json of a finished `compress run` or `compress profile`")  # fmt: skip


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file. The file
    gets the mode a plain open() would (0666 less the umask), not mkstemp's private 0600. An OSError
    (disk full, no permission) is an OutputError naming `path`."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
