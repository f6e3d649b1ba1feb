"""The latency protocol: statistics, stopping rules and interleaving."""

from __future__ import annotations

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
