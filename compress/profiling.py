"""The latency protocol every runtime shares.

Warm up, then time single calls until both a minimum iteration count and a minimum time are
reached. The variants compared on one target are measured in interleaved rounds (rotating order),
so drift in machine load spreads over all of them instead of biasing whichever ran last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    iterations: int
    seconds: float
    throughput: float  # items per second at this batch size
    capped: bool = False  # max_seconds ended the measurement before min_iterations

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(samples_ms: list[float], batch_size: int, capped: bool = False) -> LatencyStats:
    """Percentiles (linear interpolation), mean and spread of per-call latencies."""
    if not samples_ms:
        raise ValueError("no latency samples")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    return LatencyStats(
        p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean,
        std_ms=float(a.std(ddof=1)) if len(a) > 1 else 0.0, min_ms=float(a.min()), max_ms=float(a.max()),
        iterations=len(a), seconds=float(a.sum() / 1000.0), throughput=batch_size * 1000.0 / mean, capped=capped,
    )  # fmt: skip


def measure_interleaved(
    candidates: dict[str, Callable[[], object]],
    warmup: int,
    min_iterations: int,
    min_seconds: float,
    max_seconds: float,
    rounds: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, tuple[list[float], bool]]:
    """Time each candidate call; returns per candidate (samples in ms, capped?)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    names = list(candidates)
    samples: dict[str, list[float]] = {n: [] for n in names}
    capped = dict.fromkeys(names, False)
    per_round = math.ceil(min_iterations / rounds)
    floor_s, cap_s = min_seconds / rounds, max_seconds / rounds
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            capped[name] |= _timed_round(candidates[name], samples[name], per_round, floor_s, cap_s, clock)
    return {n: (samples[n], capped[n] and len(samples[n]) < min_iterations) for n in names}


def _timed_round(fn, out: list[float], iterations: int, floor_s: float, cap_s: float, clock) -> bool:
    """Run until `iterations` and `floor_s` are both reached, or `cap_s` passes; True if capped."""
    start = clock()
    done = 0
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        out.append((t1 - t0) * 1000.0)
        done += 1
        elapsed = t1 - start
        if elapsed >= cap_s:
            return done < iterations
        if done >= iterations and elapsed >= floor_s:
            return False
