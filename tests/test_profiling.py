"""The latency protocol: statistics, stopping rules and interleaving."""

from __future__ import annotations

import os

import numpy as np
import pytest

from compress.agent.profiling import measure_interleaved, summarize


def test_summary_statistics_match_numpy():
    samples = [float(x) for x in np.random.default_rng(0).gamma(2.0, 1.0, size=1001)]
    s = summarize(samples, batch_size=4)
    assert s.p50_ms == pytest.approx(np.median(samples))
    assert s.p90_ms == pytest.approx(np.percentile(samples, 90))
    assert s.p99_ms == pytest.approx(np.percentile(samples, 99))
    assert s.mean_ms == pytest.approx(np.mean(samples))
    assert s.std_ms == pytest.approx(np.std(samples, ddof=1))
    assert s.min_ms == min(samples) and s.iterations == 1001
    assert s.throughput == pytest.approx(4 * 1000 / np.mean(samples))


def test_summary_refuses_no_samples():
    with pytest.raises(ValueError):
        summarize([], 1)


class StepClock:
    """A clock that advances a fixed step per reading, to test the stopping rules exactly."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_min_iterations_and_min_seconds_both_hold():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    clock = StepClock(0.001)  # each call is timed as 1 ms
    raw = measure_interleaved({n: make(n) for n in calls}, warmup=3, min_iterations=20, min_seconds=0.1,
                              max_seconds=10, rounds=4, clock=clock)  # fmt: skip
    for name, (samples, capped) in raw.items():
        assert not capped
        assert len(samples) >= 20
        assert calls[name] == len(samples) + 3
    # 20 calls would take 40 clock steps each; the 0.1 s floor per candidate is what stopped it.
    assert clock.now >= 2 * 0.1
    assert all(len(s) > 20 for s, _ in raw.values())


def test_time_cap_is_flagged():
    raw = measure_interleaved({"slow": lambda: None}, warmup=0, min_iterations=1000, min_seconds=0,
                              max_seconds=0.5, rounds=1, clock=StepClock(0.01))  # fmt: skip
    samples, capped = raw["slow"]
    assert capped and len(samples) < 1000


def test_rounds_rotate_the_order():
    order = []
    raw = measure_interleaved({n: (lambda n=n: order.append(n)) for n in "abc"}, warmup=0, min_iterations=3,
                              min_seconds=0, max_seconds=10, rounds=3, clock=StepClock(0.001))  # fmt: skip
    assert order[:3] == ["a", "b", "c"] and order[3:6] == ["b", "c", "a"] and order[6:] == ["c", "a", "b"]
    assert all(len(s) == 3 for s, _ in raw.values())


def test_median_interval_contains_p50_and_narrows_with_more_samples():
    from compress.agent.profiling import ci_width, median_ci

    rng = np.random.default_rng(0)
    few, many = rng.normal(1.0, 0.1, 50), rng.normal(1.0, 0.1, 5000)
    low, high = median_ci(many)
    assert low < np.median(many) < high
    assert ci_width(many) < ci_width(few) and ci_width(many) < 0.01


class NoisyClock:
    """Every reading is about 1 ms after the last (log-normal spread `noise`, deterministic)."""

    def __init__(self, noise: float) -> None:
        self.now, self.noise = 0.0, noise
        self.rng = np.random.default_rng(0)

    def __call__(self) -> float:
        self.now += 0.001 * float(np.exp(self.noise * self.rng.standard_normal()))
        return self.now


def test_stability_rule_measures_on_until_the_interval_is_tight():
    raw = measure_interleaved({"m": lambda: None}, warmup=0, min_iterations=20, min_seconds=0, max_seconds=100,
                              rounds=2, ci_target=0.02, clock=NoisyClock(0.3))  # fmt: skip
    samples, capped = raw["m"]
    assert not capped and len(samples) > 20  # ±30 % noise needs more than 20 calls for ±2 %
    stats = summarize(samples, 1, capped, 0.02)
    assert stats.stable and (stats.p50_ci_high_ms - stats.p50_ci_low_ms) / 2 <= 0.02 * stats.p50_ms


def test_stability_rule_gives_up_at_the_time_cap_and_flags_it():
    raw = measure_interleaved({"m": lambda: None}, warmup=0, min_iterations=20, min_seconds=0, max_seconds=0.1,
                              rounds=2, ci_target=0.001, clock=NoisyClock(0.5))  # fmt: skip
    samples, capped = raw["m"]
    assert capped and summarize(samples, 1, capped, 0.001).stable is False


def blocks_of(sizes: list[int], wall_s: float = 1.0, cpu_s: float = 1.0, busy_s: float | None = None) -> list:
    from compress.agent.profiling import Block

    starts = np.cumsum([0, *sizes[:-1]])
    return [Block(int(s), n, wall_s, cpu_s, busy_s, 0.0 if busy_s is not None else None, 1.0)
            for s, n in zip(starts, sizes, strict=True)]  # fmt: skip


def test_drift_between_rounds_widens_the_p50_interval():
    rng = np.random.default_rng(0)
    levels = [1.0, 1.02, 0.98, 1.03]  # the machine's speed drifted between rounds
    samples = np.concatenate([rng.normal(level, 0.02, 200) for level in levels])
    pooled = summarize(list(samples), 1)
    blocked = summarize(list(samples), 1, blocks=blocks_of([200] * 4), ci_target=0.02)
    assert (pooled.p50_ci_high_ms - pooled.p50_ci_low_ms) / pooled.p50_ms < 0.02  # sampling noise only
    assert blocked.p50_ci_low_ms < pooled.p50_ci_low_ms and blocked.p50_ci_high_ms > pooled.p50_ci_high_ms
    assert (blocked.p50_ci_high_ms - blocked.p50_ci_low_ms) / blocked.p50_ms > 0.05 and blocked.stable is False
    single = summarize(list(samples), 1, blocks=blocks_of([800]))  # one round: the pooled interval
    assert (single.p50_ci_low_ms, single.p50_ci_high_ms) == (pooled.p50_ci_low_ms, pooled.p50_ci_high_ms)


def test_each_round_of_each_candidate_is_a_block_with_its_cpu_record():
    from compress.agent.profiling import Monitor

    seen = []
    monitor = Monitor(on_block=seen.append)
    raw = measure_interleaved({"a": lambda: sum(range(2000)), "b": lambda: None}, warmup=2, min_iterations=30,
                              min_seconds=0.03, max_seconds=1, rounds=3, monitor=monitor)  # fmt: skip
    assert seen == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # before each warm-up, then each block
    for name, (samples, _) in raw.items():
        blocks = monitor.blocks[name]
        assert [b.start for b in blocks] == [0, blocks[0].count, blocks[0].count + blocks[1].count]
        assert sum(b.count for b in blocks) == len(samples)
        assert all(b.wall_s >= 0.01 and b.cpu_s > 0 for b in blocks)


def test_judging_disturbance_from_cpu_shares():
    from compress.agent.profiling import judge

    # A 2-core machine timing one thread: its own busy core is not other load.
    alone = judge(blocks_of([10] * 4, wall_s=0.5, cpu_s=0.5, busy_s=0.55), cores=2, threads=1)
    assert alone["disturbed"] is False and alone["cpu_share"] == 1.0 and alone["others_cpu_share"] == pytest.approx(0.1)
    hog = judge(blocks_of([10] * 4, wall_s=0.5, cpu_s=0.3, busy_s=1.0), cores=2, threads=1)
    assert hog["disturbed"] is True and hog["cpu_share"] == pytest.approx(0.6)
    assert hog["disturbance"] == ("the measuring process ran only 60% of the time it was timed; "
                                  "other processes used 1.4 of the 1 core(s) it left free")  # fmt: skip
    # 8 cores, 4 threads: 3 cores of others is more than half of the 4 left free.
    busy = judge(blocks_of([10] * 2, wall_s=1.0, cpu_s=4.0, busy_s=7.0), cores=8, threads=4)
    assert busy["disturbed"] is True and busy["others_cpu_share"] == pytest.approx(0.75)
    # A GPU runtime may wait for its device: a low CPU share alone is no disturbance there.
    assert judge(blocks_of([10], cpu_s=0.2, busy_s=0.3), cores=4, threads=1, cpu_bound=False)["disturbed"] is False
    # Under MIN_JUDGED_S of timing the machine's 10 ms ticks are too coarse: only the process share counts.
    short = judge(blocks_of([10], wall_s=0.1, cpu_s=0.1, busy_s=0.2), cores=2, threads=1)
    assert short["disturbed"] is False and short["others_cpu_share"] == pytest.approx(1.0)
    unknown = judge(blocks_of([10]), cores=2, threads=1)  # no /proc/stat (macOS, Windows)
    assert unknown["disturbed"] is False and "others_cpu_share" not in unknown


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_the_timing_thread_is_pinned_to_one_core_and_released_after():
    from compress.agent.cpu import one_core

    before = os.sched_getaffinity(0)
    with one_core():
        inside = os.sched_getaffinity(0)
    assert len(inside) == 1 and inside <= before and os.sched_getaffinity(0) == before
