"""The latency protocol every runtime shares, here and on remote devices.

Warm up, then time single calls until both a minimum iteration count and a minimum time are
reached, then keep going until the 95 % confidence interval of p50 is within ±`ci_target` (or the
time cap ends it, which is flagged). The variants compared on one target are measured in
interleaved rounds (rotating order), so drift in machine load spreads over all of them instead of
biasing whichever ran last.

This module needs only numpy: it is copied as is to remote devices, which have no compress install.
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
    capped: bool = False  # max_seconds ended the measurement before the protocol was met
    p50_ci_low_ms: float | None = None  # 95 % confidence interval of p50 (distribution-free)
    p50_ci_high_ms: float | None = None
    stable: bool | None = None  # the interval met the protocol's ci_target (None: no target)

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(samples_ms: list[float], batch_size: int, capped: bool = False, ci_target: float = 0.0) -> LatencyStats:
    """Percentiles (linear interpolation), mean, spread and the p50 interval of per-call latencies."""
    if not samples_ms:
        raise ValueError("no latency samples")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    low, high = median_ci(a)
    return LatencyStats(
        p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean,
        std_ms=float(a.std(ddof=1)) if len(a) > 1 else 0.0, min_ms=float(a.min()), max_ms=float(a.max()),
        iterations=len(a), seconds=float(a.sum() / 1000.0), throughput=batch_size * 1000.0 / mean, capped=capped,
        p50_ci_low_ms=low, p50_ci_high_ms=high, stable=ci_width(a) <= ci_target if ci_target > 0 else None,
    )  # fmt: skip


def median_ci(samples, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of the median from order statistics (no distribution assumed):
    the ranks n/2 ± z·√n/2 of the sorted samples."""
    a = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(a)
    half = z * math.sqrt(n) / 2
    return float(a[max(0, math.floor(n / 2 - half))]), float(a[min(n - 1, math.ceil(n / 2 + half))])


def ci_width(samples) -> float:
    """Half the p50 interval, relative to p50 (0.02 means ±2 %)."""
    if len(samples) < 2:
        return math.inf
    low, high = median_ci(samples)
    p50 = float(np.median(samples))
    return (high - low) / 2 / p50 if p50 > 0 else math.inf


def measure_interleaved(
    candidates: dict[str, Callable[[], object]],
    warmup: int,
    min_iterations: int,
    min_seconds: float,
    max_seconds: float,
    rounds: int,
    ci_target: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, tuple[list[float], bool]]:
    """Time each candidate call; returns per candidate (samples in ms, capped?).

    After the base rounds, candidates whose p50 interval is wider than ±`ci_target` get further
    rounds (still rotating) until it is narrow enough or `max_seconds` of their time is spent.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    names = list(candidates)
    samples: dict[str, list[float]] = {n: [] for n in names}
    spent = dict.fromkeys(names, 0.0)
    per_round = math.ceil(min_iterations / rounds)
    floor_s, cap_s = min_seconds / rounds, max_seconds / rounds
    for r in range(rounds):
        for name in _rotated(names, r):
            spent[name] += _timed_round(candidates[name], samples[name], per_round, floor_s, cap_s, clock)
    r = rounds
    while ci_target > 0:
        pending = [n for n in _rotated(names, r) if ci_width(samples[n]) > ci_target and spent[n] < max_seconds]
        if not pending:
            break
        for name in pending:
            left = min(cap_s, max_seconds - spent[name])
            spent[name] += _timed_round(candidates[name], samples[name], per_round, 0.0, left, clock)
        r += 1
    return {n: (samples[n], len(samples[n]) < min_iterations or ci_width(samples[n]) > ci_target > 0) for n in names}


def _rotated(names: list[str], r: int) -> list[str]:
    return names[r % len(names) :] + names[: r % len(names)]


def _timed_round(fn, out: list[float], iterations: int, floor_s: float, cap_s: float, clock) -> float:
    """Run until `iterations` and `floor_s` are both reached, or `cap_s` passes; returns the time spent."""
    start = clock()
    done = 0
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        out.append((t1 - t0) * 1000.0)
        done += 1
        elapsed = t1 - start
        if elapsed >= cap_s or (done >= iterations and elapsed >= floor_s):
            return elapsed
