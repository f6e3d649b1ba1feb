"""Quick in-process probes a stage uses to compare candidates (accuracy-aware quantization):
outputs in batches and a short latency estimate. Reports measure through targets, never these."""

from __future__ import annotations

import numpy as np

from compress.agent.profiling import measure_interleaved, summarize
from compress.runtimes.base import Session
from compress.tasks import Task


def predict(session: Session, task: Task, x: np.ndarray, batch_size: int = 64, chunk: int = 1024) -> np.ndarray:
    """The first output for all of `x`, run in batches (one at a time for fixed-batch models); `x` is
    read `chunk` examples at a time, so a split on disk never sits in memory whole."""
    from compress.agent.job import predict as run_in_batches

    return np.concatenate([run_in_batches(session, task.feeds(x[i : i + chunk]), batch_size)
                           for i in range(0, len(x), chunk)])  # fmt: skip


def quick_p50(session: Session, task: Task, x: np.ndarray) -> float:
    """A short single-thread latency probe (batch 1) for comparing candidates inside a stage."""
    feeds = task.feeds(x[:1])
    raw = measure_interleaved({"m": lambda: session.run(feeds)}, 5, 50, 0.2, 5.0, 1)
    return summarize(raw["m"][0], 1).p50_ms
