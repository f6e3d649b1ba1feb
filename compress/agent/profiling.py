"""The latency protocol every runtime shares, here and on remote devices.

Warm up, then time single calls until both a minimum iteration count and a minimum time are
reached, then keep going until the 95 % confidence interval of p50 is within ±`ci_target` (or the
time cap ends it, which is flagged). The variants compared on one target are measured in
interleaved rounds (rotating order), so drift in machine load spreads over all of them instead of
biasing whichever ran last. Each round of each variant is a block: the p50 interval comes from the
spread between blocks (so drift between rounds widens it), and each block records how much CPU the
measuring process got and how much other processes used, so a measurement that shared the machine
is flagged `disturbed` (see `judge` and its thresholds).

This module needs only numpy: it is copied as is to remote devices, which have no compress install.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from compress.agent.cpu import Block, Monitor

__all__ = ["Block", "LatencyStats", "Monitor", "ci_width", "judge", "measure_interleaved", "median_ci", "summarize"]

# Disturbance thresholds (see README, "Latency protocol"). A CPU runtime's timing thread alone keeps
# one core busy, so a process that ran less than 90 % of the wall time waited for the CPU: it was
# preempted by other work for over a tenth of the time it was timed.
CPU_SHARE_MIN = 0.9
# Other processes using more than half of the cores the measurement leaves free are running more
# often than not beside it, sharing caches, memory bandwidth and the turbo budget; at that point
# they also start to compete for the measuring cores themselves. The measuring process's own CPU
# time is subtracted first, so a 2-core machine timing one thread is not disturbed by itself.
OTHERS_SHARE_MAX = 0.5
# /proc/stat counts in ticks (10 ms per core): below this much timed wall time the others' share is
# too coarse to judge, so only the process's own (exact) CPU share decides.
MIN_JUDGED_S = 0.5
STEAL_SHARE_MAX = 0.05  # a hypervisor taking more than 5 % of the machine from the guest

# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (numpy has none; no scipy).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)  # fmt: skip


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
    p50_ci_low_ms: float | None = None  # 95 % confidence interval of p50 (block spread and order statistics)
    p50_ci_high_ms: float | None = None
    stable: bool | None = None  # the interval met the protocol's ci_target (None: no target)
    disturbed: bool | None = None  # other load on the machine while timing (None: not judged)
    disturbance: str | None = None  # why it was flagged
    cpu_share: float | None = None  # the measuring process's CPU seconds per wall second while timing
    others_cpu_share: float | None = None  # other processes' CPU, as a share of the cores left free
    steal_share: float | None = None  # CPU taken by the hypervisor, as a share of all cores
    load_avg: float | None = None  # the highest 1-minute load average seen after a block

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(
    samples_ms: list[float],
    batch_size: int,
    capped: bool = False,
    ci_target: float = 0.0,
    blocks: list[Block] | None = None,
    load: dict | None = None,
    medians: list[float] | None = None,
) -> LatencyStats:
    """Percentiles (linear interpolation), mean, spread and the p50 interval of per-call latencies;
    `blocks` (from a Monitor) widen the interval by the spread between rounds (or `medians`, the
    blocks' medians where the samples were pooled from several devices), `load` is `judge`'s."""
    if len(samples_ms) == 0:
        raise ValueError("no latency samples")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    medians = medians if medians is not None else block_medians(a, blocks or [])
    low, high = p50_interval(a, medians)
    return LatencyStats(
        p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean,
        std_ms=float(a.std(ddof=1)) if len(a) > 1 else 0.0, min_ms=float(a.min()), max_ms=float(a.max()),
        iterations=len(a), seconds=float(a.sum() / 1000.0), throughput=batch_size * 1000.0 / mean, capped=capped,
        p50_ci_low_ms=low, p50_ci_high_ms=high, stable=ci_width(a, medians) <= ci_target if ci_target > 0 else None,
        **(load or {}),
    )  # fmt: skip


def median_ci(samples, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of the median from order statistics (no distribution assumed):
    the ranks n/2 ± z·√n/2 of the sorted samples."""
    a = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(a)
    half = z * math.sqrt(n) / 2
    return float(a[max(0, math.floor(n / 2 - half))]), float(a[min(n - 1, math.ceil(n / 2 + half))])


def block_medians(samples, blocks: list[Block]) -> list[float]:
    """The median of each block's samples (blocks that timed nothing are left out)."""
    a = np.asarray(samples, dtype=np.float64)
    return [float(np.median(a[b.start : b.start + b.count])) for b in blocks if b.count > 0]


def p50_interval(samples, medians: list[float] | None = None) -> tuple[float, float]:
    """The 95 % interval of p50: p50 ± t·s/√k from the k blocks' medians (rounds that disagree, as
    when the machine's load drifts, widen it), and never narrower than the order-statistic interval
    of the pooled samples, which is all there is with a single block."""
    low, high = median_ci(samples)
    k = len(medians or [])
    if k < 2:
        return low, high
    p50 = float(np.median(samples))
    t = T95[k - 2] if k - 1 <= len(T95) else 1.96
    half = t * float(np.std(medians, ddof=1)) / math.sqrt(k)
    return min(low, p50 - half), max(high, p50 + half)


def ci_width(samples, medians: list[float] | None = None) -> float:
    """Half the p50 interval, relative to p50 (0.02 means ±2 %)."""
    if len(samples) < 2:
        return math.inf
    low, high = p50_interval(samples, medians)
    p50 = float(np.median(samples))
    return (high - low) / 2 / p50 if p50 > 0 else math.inf


def judge(blocks: list[Block], cores: int, threads: int, cpu_bound: bool = True) -> dict:
    """The CPU shares over a measurement's blocks and whether other work disturbed it: the process
    ran less than CPU_SHARE_MIN of the time (only `cpu_bound` runtimes, which never wait for a
    device), or others used more than OTHERS_SHARE_MAX of the cores left free (at least one, as
    `threads` may be all of them), or the hypervisor stole more than STEAL_SHARE_MAX."""
    wall = sum(b.wall_s for b in blocks)
    if wall <= 0:
        return {}
    own = sum(b.cpu_s for b in blocks)
    shares = {"cpu_share": own / wall, "load_avg": max((b.load_avg for b in blocks if b.load_avg is not None),
                                                       default=None)}  # fmt: skip
    reasons = []
    if cpu_bound and own / wall < CPU_SHARE_MIN:
        reasons.append(f"the measuring process ran only {own / wall:.0%} of the time it was timed")
    if all(b.busy_s is not None for b in blocks):
        spare = max(1, cores - threads)
        others = max(0.0, sum(b.busy_s for b in blocks) - own) / wall  # cores' worth
        steal = sum(b.steal_s for b in blocks) / wall / cores
        shares.update(others_cpu_share=others / spare, steal_share=steal)
        if wall >= MIN_JUDGED_S and others / spare > OTHERS_SHARE_MAX:
            reasons.append(f"other processes used {others:.2g} of the {spare} core(s) it left free")
        if wall >= MIN_JUDGED_S and steal > STEAL_SHARE_MAX:
            reasons.append(f"the hypervisor took {steal:.0%} of the CPU (steal time)")
    return {**shares, "disturbed": bool(reasons), "disturbance": "; ".join(reasons) or None}


def measure_interleaved(
    candidates: dict[str, Callable[[], object]],
    warmup: int,
    min_iterations: int,
    min_seconds: float,
    max_seconds: float,
    rounds: int,
    ci_target: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
    monitor: Monitor | None = None,
) -> dict[str, tuple[list[float], bool]]:
    """Time each candidate call; returns per candidate (samples in ms, capped?).

    After the base rounds, candidates whose p50 interval is wider than ±`ci_target` get further
    rounds (still rotating) until it is narrow enough or `max_seconds` of their time is spent.
    `monitor` receives each block's CPU record (`monitor.blocks`) and may pin the timing thread.
    """
    monitor = monitor or Monitor()
    for name, fn in candidates.items():
        monitor.starting(name)
        for _ in range(warmup):
            fn()
    names = list(candidates)
    samples: dict[str, list[float]] = {n: [] for n in names}
    spent = dict.fromkeys(names, 0.0)
    per_round = math.ceil(min_iterations / rounds)
    floor_s, cap_s = min_seconds / rounds, max_seconds / rounds

    def block(name: str, floor: float, cap: float) -> None:
        with monitor.block(name, samples[name]):
            spent[name] += _timed_round(candidates[name], samples[name], per_round, floor, cap, clock)

    def width(name: str) -> float:
        return ci_width(samples[name], block_medians(samples[name], monitor.blocks.get(name, [])))

    with monitor.pinned():
        for r in range(rounds):
            for name in _rotated(names, r):
                block(name, floor_s, cap_s)
        r = rounds
        while ci_target > 0:
            pending = [n for n in _rotated(names, r) if width(n) > ci_target and spent[n] < max_seconds]
            for name in pending:  # blocks as long as the base ones, so their medians are comparable
                block(name, floor_s, min(cap_s, max_seconds - spent[name]))
            if not pending:
                break
            r += 1
    return {n: (samples[n], len(samples[n]) < min_iterations or width(n) > ci_target > 0) for n in names}


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
