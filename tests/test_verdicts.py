"""Verdicts on simulated runs: no false alarms on noise, planted changes found, rules as documented.

Every sample set is drawn afresh from a seeded generator, so the rates below are measured, not
written down; run `pytest -s tests/test_verdicts.py` to see them printed.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from profiler.analysis.verdicts import (
    MIN_SAMPLES,
    STATES,
    Sampled,
    Verdict,
    benjamini_hochberg,
    judge,
    statistic,
)

Pair = tuple[Sampled, Sampled]
CHANGED = ("IMPROVED", "REGRESSED")


def lognormal(rng: np.random.Generator, n: int, cv: float, mean: float = 100.0) -> np.ndarray:
    """Draw n samples of a lognormal with the given mean and coefficient of variation."""
    sigma = math.sqrt(math.log1p(cv * cv))
    return mean * np.exp(rng.normal(-sigma * sigma / 2, sigma, n))


def normal(rng: np.random.Generator, n: int, cv: float, mean: float = 100.0) -> np.ndarray:
    """Draw n samples of a normal with the given mean and coefficient of variation."""
    return rng.normal(mean, cv * mean, n)


def pair(name: str, direction: str, a: np.ndarray | list[float], b: np.ndarray | list[float],
         **options: Any) -> Pair:
    """Build the (A, B) samples of one metric."""
    return (Sampled(name, direction, tuple(a), **options),
            Sampled(name, direction, tuple(b), **options))


def slowdown(seed: int, factor: float = 0.8, cv: float = 0.05, n: int = 10,
             **options: Any) -> Pair:
    """A throughput metric whose B mean is factor × A's."""
    rng = np.random.default_rng(seed)
    return pair("bulk_throughput_texts_per_s", "higher", normal(rng, n, cv),
                normal(rng, n, cv, 100.0 * factor), **options)


def only(pairs: list[Pair], **options: Any) -> Verdict:
    """Judge a comparison of one metric and return its verdict."""
    (verdict,) = judge(pairs, **options)
    return verdict


def null_comparison(rng: np.random.Generator, metrics: int, sizes: tuple[int, ...]) -> list[Pair]:
    """Metrics whose A and B samples come from one distribution (CV 5–15%, mixed shapes)."""
    pairs = []
    for index in range(metrics):
        n, cv = int(rng.choice(sizes)), float(rng.uniform(0.05, 0.15))
        draw = lognormal if rng.random() < 0.5 else normal
        direction = "higher" if rng.random() < 0.5 else "lower"
        pairs.append(pair(f"metric_{index}", direction, draw(rng, n, cv), draw(rng, n, cv)))
    return pairs


def test_noise_alone_never_regresses() -> None:
    verdicts = []
    for seed in range(200):
        rng = np.random.default_rng(1_000 + seed)
        verdicts += judge(null_comparison(rng, 6, (3, 5, 10)), seed=seed)
    states = [v.state for v in verdicts]
    alarms = sum(state in CHANGED for state in states)
    print(f"\nfalse-alarm rate on pure noise: {alarms}/{len(states)} = "
          f"{alarms / len(states):.4f} (UNCHANGED {states.count('UNCHANGED')}, "
          f"INCONCLUSIVE {states.count('INCONCLUSIVE')})")
    assert set(states) <= set(STATES)
    assert states.count("REGRESSED") == 0


def test_planted_slowdown_is_found() -> None:
    verdicts = [only([slowdown(5_000 + seed)], seed=seed) for seed in range(200)]
    found = sum(v.state == "REGRESSED" for v in verdicts)
    print(f"\ndetection rate of a 20% slowdown (CV 5%, n=10): {found}/200 = {found / 200:.3f}")
    assert found >= 190
    assert all(-0.3 < v.change < -0.1 and v.low <= v.change <= v.high for v in verdicts)


def test_noise_larger_than_the_change_is_inconclusive() -> None:
    states = []
    for seed in range(100):
        rng = np.random.default_rng(7_000 + seed)
        metric = pair("latency_ms_p50", "lower", lognormal(rng, 5, 0.4),
                      lognormal(rng, 5, 0.4, 110.0))
        states.append(only([metric], seed=seed).state)
    assert states.count("INCONCLUSIVE") >= 90


def test_tight_identical_distributions_are_unchanged() -> None:
    for seed in range(20):
        rng = np.random.default_rng(8_000 + seed)
        verdict = only([pair("query_latency_ms", "lower", lognormal(rng, 20, 0.01),
                             lognormal(rng, 20, 0.01))], seed=seed)
        assert verdict.state == "UNCHANGED", verdict.reason
        assert verdict.reason.startswith("UNCHANGED: the whole 95% interval")
        assert verdict.reason.endswith("lies within the 5% margin")
    same = lognormal(np.random.default_rng(1), 20, 0.01)
    verdict = only([pair("query_latency_ms", "lower", same, same)])
    assert verdict.state == "UNCHANGED" and verdict.change == 0.0


@pytest.mark.parametrize(("factor", "state"), [(1.2, "REGRESSED"), (0.8, "IMPROVED")])
def test_lower_is_better_reverses_the_sign(factor: float, state: str) -> None:
    for seed in range(10):
        rng = np.random.default_rng(9_000 + seed)
        verdict = only([pair("latency_ms_p50", "lower", lognormal(rng, 10, 0.05, 10.0),
                             lognormal(rng, 10, 0.05, 10.0 * factor))], seed=seed)
        assert verdict.state == state, verdict.reason
        assert verdict.discovery and verdict.reason.startswith(f"{state}: the whole ")


def test_quantile_judges_the_tail_not_the_median() -> None:
    base = lognormal(np.random.default_rng(3), 400, 0.05, 10.0)
    # The same run with its slowest fifth of requests 50% slower: medians match exactly.
    tail = np.where(base > np.quantile(base, 0.8), 1.5 * base, base)
    assert statistic(tail, 0.5) == statistic(base, 0.5)
    p95 = only([pair("query_latency_ms_p95", "lower", base, tail, quantile=0.95)])
    assert p95.change == pytest.approx(0.5)
    assert p95.state == "REGRESSED", p95.reason
    median = only([pair("query_latency_ms_p50", "lower", base, tail, quantile=0.5)])
    assert median.change == 0.0 and median.state == "UNCHANGED", median.reason


def stalls(rng: np.random.Generator, n: int, share: float = 0.08) -> np.ndarray:
    """Single-query latencies on a shared machine: 5% jitter, and a share of calls stalled."""
    base = lognormal(rng, n, 0.05, 6.0)
    return np.where(rng.random(n) < share, base * rng.uniform(1.5, 3.0, n), base)


def test_a_p95_of_too_few_calls_is_never_called() -> None:
    # The p95 of ten calls lies between their two slowest: where stalls fell, not the model. Ten
    # calls before and thirty after, as a build and its --confirm pass left them, once came out
    # REGRESSED +114% between two builds of the same code.
    states = set()
    for seed in range(150):
        rng = np.random.default_rng(seed)
        for n_a, n_b in ((10, 30), (99, 200)):
            verdict = only([pair("query_latency_ms_p95", "lower", stalls(rng, n_a),
                                 stalls(rng, n_b), quantile=0.95, noise=0.1)], seed=seed)
            states.add(verdict.state)
            assert verdict.p_value == 1.0 and not verdict.discovery
            assert verdict.reason.startswith("INCONCLUSIVE: too few samples for a p95 ")
            assert f"n={n_a} in A" in verdict.reason and "it needs 100" in verdict.reason
    assert states == {"INCONCLUSIVE"}
    # The median of the same ten calls is judged as before.
    rng = np.random.default_rng(1)
    median = only([pair("query_latency_ms_p50", "lower", stalls(rng, 10), stalls(rng, 10))])
    assert "too few" not in median.reason


def test_a_p95_of_enough_calls_is_judged_with_few_false_alarms() -> None:
    false_alarms = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        verdict = only([pair("query_latency_ms_p95", "lower", stalls(rng, 100),
                             stalls(rng, 100), quantile=0.95, noise=0.1)], seed=seed)
        false_alarms += verdict.state in CHANGED
    print(f"p95 of 100 calls with 8% stalled, no change: {false_alarms}/150 called changed")
    assert false_alarms <= 0.05 * 150


def test_statistic_is_numpy_linear_quantile() -> None:
    assert statistic([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert statistic([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)


def test_benjamini_hochberg_by_hand() -> None:
    # M = 4, q = 0.05: the k-th smallest p passes when p ≤ k·q/M = 0.0125, 0.025, 0.0375, 0.05.
    # Sorted 0.01 ✓, 0.03 > 0.025, 0.04 > 0.0375, 0.5 > 0.05: the largest passing k is 1.
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5], 0.05) == [True, False, False, False]
    # Step-up: 0.02 and 0.03 fail their own thresholds, but k = 4 passes (0.04 ≤ 0.05), so
    # all four p-values up to it are discoveries.
    assert benjamini_hochberg([0.035, 0.02, 0.04, 0.03], 0.05) == [True] * 4
    assert benjamini_hochberg([0.2, 0.3], 0.05) == [False, False]
    assert benjamini_hochberg([], 0.05) == []


def test_one_regression_among_many_metrics() -> None:
    wrongly, found, levels = 0, 0, set()
    for seed in range(100):
        rng = np.random.default_rng(11_000 + seed)
        pairs = [slowdown(12_000 + seed, factor=0.75), *null_comparison(rng, 19, (5, 10))]
        verdicts = judge(pairs, seed=seed)
        wrongly += sum(v.state == "REGRESSED" for v in verdicts[1:])
        found += verdicts[0].state == "REGRESSED"
        discoveries = sum(v.discovery for v in verdicts)
        if verdicts[0].discovery:
            levels.add(verdicts[0].level == pytest.approx(1 - discoveries * 0.05 / 20))
        assert all(v.level == pytest.approx(0.95) for v in verdicts if not v.discovery)
    print(f"\none regression among 20 metrics: found {found}/100, "
          f"unaffected metrics REGRESSED {wrongly}/1900")
    assert wrongly == 0
    assert found >= 90
    assert levels == {True}


def test_a_slower_machine_explains_a_slowdown() -> None:
    metric = slowdown(21)
    blamed = only([metric], calibration=(-0.25, -0.15))
    assert blamed.state == "INCONCLUSIVE" and "machine" in blamed.reason
    assert blamed.discovery  # the change is real; its cause is what is unknown
    assert only([metric], calibration=(-0.02, 0.02)).state == "REGRESSED"
    assert only([metric], calibration=(0.15, 0.25)).state == "REGRESSED"  # faster machine
    memory = slowdown(21, calibrated=False)
    assert only([memory], calibration=(-0.25, -0.15)).state == "REGRESSED"


def test_a_faster_machine_explains_a_speedup() -> None:
    verdict = only([slowdown(22, factor=1.25)], calibration=(0.15, 0.25))
    assert verdict.state == "INCONCLUSIVE" and "faster runner" in verdict.reason


def test_too_few_samples_are_inconclusive() -> None:
    assert MIN_SAMPLES == 3
    verdict = only([pair("cold_start_s", "lower", [2.0, 2.1], [4.0, 4.1, 4.2])])
    assert verdict.state == "INCONCLUSIVE" and verdict.p_value == 1.0
    assert "too few samples to judge (n=2" in verdict.reason
    assert not verdict.discovery


def test_noise_from_history_judges_single_samples() -> None:
    verdict = only([pair("bulk_throughput_texts_per_s", "higher", [100.0], [50.0], noise=0.02)])
    assert verdict.state == "REGRESSED", verdict.reason
    assert verdict.change == pytest.approx(-0.5)
    same = only([pair("bulk_throughput_texts_per_s", "higher", [100.0], [101.0], noise=0.01)])
    assert same.state == "UNCHANGED", same.reason


def test_run_to_run_noise_widens_the_interval() -> None:
    quiet = only([slowdown(31)])
    noisy = only([slowdown(31, noise=0.15)])
    assert quiet.state == "REGRESSED"
    assert noisy.state == "INCONCLUSIVE", noisy.reason
    assert noisy.high - noisy.low > 2 * (quiet.high - quiet.low)


@pytest.mark.parametrize("bad", [0.0, -3.0, math.nan, math.inf])
def test_unusable_samples_are_inconclusive(bad: float) -> None:
    verdicts = judge([pair("peak_rss_mb", "lower", [10.0, 11.0, bad], [10.0, 11.0, 12.0]),
                      slowdown(41)])
    assert verdicts[0].state == "INCONCLUSIVE" and verdicts[0].p_value == 1.0
    assert "sample" in verdicts[0].reason
    assert verdicts[1].state == "REGRESSED"
    body = verdicts[0].to_dict()
    assert body["low"] is None and body["high"] is None
    json.dumps(body, allow_nan=False)


def test_reasons_name_the_interval_and_the_margin() -> None:
    verdict = only([slowdown(51)])
    low, high = round(100 * verdict.low), round(100 * verdict.high)
    assert verdict.reason == (f"REGRESSED: the whole 95% interval ({low:+d}% to {high:+d}%) "
                              "lies beyond the 5% margin")
    rng = np.random.default_rng(52)
    wide = only([pair("latency_ms_p50", "lower", lognormal(rng, 10, 0.3),
                      lognormal(rng, 10, 0.3))])
    assert wide.state == "INCONCLUSIVE" and wide.reason.endswith("straddles the 5% margin")
    assert set(verdict.to_dict()) == {"name", "state", "change", "low", "high", "level",
                                      "margin", "p_value", "discovery", "reason",
                                      "unreliable"}


def test_same_seed_same_verdicts() -> None:
    pairs = null_comparison(np.random.default_rng(61), 6, (5, 10))
    assert judge(pairs, seed=4) == judge(pairs, seed=4)


def test_mismatched_or_invalid_metrics_raise() -> None:
    with pytest.raises(ValueError, match="direction"):
        Sampled("x", "up", (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="cannot compare"):
        judge([(Sampled("x", "higher", (1.0, 2.0, 3.0)), Sampled("y", "higher", (1.0, 2.0, 3.0)))])
