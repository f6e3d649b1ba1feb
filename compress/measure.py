"""Measure deployed artifacts on a target: accuracy on the test split and latency per batch size.

Everything here runs the exported file in the target's runtime; the PyTorch module is never used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.data import Splits
from compress.errors import CompressError, StageError, first_line
from compress.profiling import measure_interleaved, summarize
from compress.report.schema import Accuracy, Latency
from compress.runtimes import get_runtime
from compress.runtimes.base import Session
from compress.targets import TargetSpec
from compress.tasks import Task


@dataclass(frozen=True)
class Deployable:
    """A variant's file as a runtime sees it."""

    path: Path
    kind: str  # artifact kind: "onnx" or "openvino"
    precision: str


@dataclass
class TargetResults:
    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    latency: dict[str, list[Latency]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def measure_target(target: TargetSpec, models: dict[str, Deployable], splits: Splits, task: Task, log) -> TargetResults:
    """Accuracy, then interleaved latency, of every model this target's runtime can run."""
    runtime = get_runtime(target)
    results = TargetResults(versions=runtime.versions())
    sessions: dict[str, Session] = {}
    for name, model in models.items():
        if model.kind not in runtime.formats:  # e.g. an OpenVINO IR on ONNX Runtime: shown as "–"
            continue
        try:
            results.accuracy[name] = evaluate(runtime.load(model.path, os.cpu_count() or 1), splits, task, target)
            sessions[name] = runtime.load(model.path, target.threads)
        except CompressError as exc:
            results.errors[name] = exc.message
        except Exception as exc:  # a runtime refusing one file must not lose the other variants
            results.errors[name] = f"{target.runtime} could not run this model: {first_line(exc)}"
    for name, error in results.errors.items():
        log(f"warning: {name} on {target.name}: {error}")
    for batch in target.batch_sizes:
        runnable = {n: s for n, s in sessions.items() if s.fixed_batch in (None, batch)}
        if not runnable:
            continue
        log(f"{target.name}: timing {len(runnable)} variant(s) at batch {batch} with {target.threads} thread(s)")
        precisions = {n: s.precision or models[n].precision for n, s in runnable.items()}
        for name, stats in time_batch(
            runnable, precisions, task.feeds(batch_of(splits.x_test, batch)), batch, target
        ).items():
            results.latency.setdefault(name, []).append(stats)
    return results


def evaluate(session: Session, splits: Splits, task: Task, target: TargetSpec) -> Accuracy:
    """Run the test split through the runtime and score it with the task's metric."""
    x, y = splits.x_test, splits.y_test
    outputs = predict(session, task, x, target.eval_batch_size)
    if not np.isfinite(outputs).all():
        raise StageError(f"{target.runtime} produced NaN or infinite outputs for this model",
                         hint="the quantization scheme does not suit this runtime; try another backend or method")  # fmt: skip
    value = task.score(outputs, y)
    return Accuracy(metric=task.metric, value=round(value, 4), split="test", runtime=target.runtime,
                    target=target.name, samples=len(y))  # fmt: skip


def predict(session: Session, task: Task, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The first output for all of `x`, run in batches (one at a time for fixed-batch models)."""
    step = session.fixed_batch or batch_size
    return np.concatenate([session.run(task.feeds(x[i : i + step]))[0] for i in range(0, len(x), step)])


def quick_p50(session: Session, task: Task, x: np.ndarray) -> float:
    """A short single-thread latency probe (batch 1) for comparing candidates inside a stage."""
    feeds = task.feeds(x[:1])
    raw = measure_interleaved({"m": lambda: session.run(feeds)}, 5, 50, 0.2, 5.0, 1)
    return summarize(raw["m"][0], 1).p50_ms


def time_batch(
    sessions: dict[str, Session],
    precisions: dict[str, str],
    feeds: dict[str, np.ndarray],
    batch: int,
    target: TargetSpec,
) -> dict[str, Latency]:
    calls = {n: (lambda s=s: s.run(feeds)) for n, s in sessions.items()}
    p = target.protocol
    raw = measure_interleaved(calls, p.warmup, p.min_iterations, p.min_seconds, p.max_seconds, p.rounds)
    out = {}
    for name, (samples, capped) in raw.items():
        stats = summarize(samples, batch, capped).to_dict()
        out[name] = Latency(target=target.name, runtime=target.runtime, batch_size=batch, threads=target.threads,
                            precision=precisions[name], **stats)  # fmt: skip
    return out


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """`batch` real test inputs (repeated when the split is smaller), contiguous."""
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch]) if reps > 1 else np.ascontiguousarray(x[:batch])
