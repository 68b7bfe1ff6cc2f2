"""Change points in a benchmark history by E-Divisive means: planted steps, flat noise, edges."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from profiler.analysis import changepoints
from profiler.analysis.changepoints import change_points

SEEDS = range(50)
RUNS = 40


def noisy(seed: int, cv: float = 0.05, runs: int = RUNS) -> np.ndarray:
    """Timings around 100 ms with the given coefficient of variation."""
    return 100.0 * (1.0 + cv * np.random.default_rng(seed).standard_normal(runs))


def q_by_hand(segment: np.ndarray, tau: int) -> float:
    """Matteson & James's q̂ for segment split at tau, straight from the definition."""
    x, y = segment[:tau], segment[tau:]
    n, m = len(x), len(y)
    between = np.abs(x[:, None] - y[None, :]).sum()
    within_x = sum(abs(a - b) for a, b in combinations(x, 2))
    within_y = sum(abs(a - b) for a, b in combinations(y, 2))
    return n * m / (n + m) * (2 * between / (n * m) - within_x / (n * (n - 1) / 2)
                              - within_y / (m * (m - 1) / 2))


def test_q_matches_the_definition() -> None:
    segments = np.random.default_rng(7).lognormal(size=(3, 17))
    table = changepoints._q_table(segments, 3)  # [:, i, j]: tau = 3 + i, kappa = 6 + j
    assert table.shape == (3, 12, 12)
    for row, q in zip(segments, table, strict=True):
        for i, j in np.ndindex(12, 12):
            tau, kappa = 3 + i, 6 + j
            expected = q_by_hand(row[:kappa], tau) if kappa - tau >= 3 else -np.inf
            assert q[i, j] == pytest.approx(expected)


def test_planted_step_found_near_its_position() -> None:
    found = 0
    for seed in SEEDS:
        step = int(np.random.default_rng(10_000 + seed).integers(10, 31))
        series = noisy(seed)
        series[step:] *= 1.2  # a 20% slowdown
        points = change_points(series.tolist(), seed=seed)
        found += any(abs(point.index - step) <= 2 for point in points)
    rate = found / len(SEEDS)
    print(f"20% step at 5% CV: found within 2 runs in {rate:.0%} of {len(SEEDS)} seeds")
    assert rate >= 0.9


@pytest.mark.parametrize("cv", [0.05, 0.10])
def test_flat_noise_rarely_gives_a_change_point(cv: float) -> None:
    false = sum(bool(change_points(noisy(1_000 + seed, cv).tolist(), seed=seed))
                for seed in SEEDS)
    rate = false / len(SEEDS)
    print(f"flat noise at {cv:.0%} CV: a false change point in {rate:.0%} of {len(SEEDS)} seeds")
    # alpha = 0.01 expects 0.5 of 50; P(>= 4 | Binomial(50, 0.01)) is about 0.002
    assert false <= 3


def test_up_then_down_finds_both_steps() -> None:
    series = noisy(3, runs=60)
    series[20:40] *= 1.25
    points = change_points(series.tolist())
    assert [point.index for point in points] == [20, 40]
    assert points[0].change() > 0.15 and points[1].change() < -0.15
    assert all(point.p_value <= 0.01 for point in points)


def test_change_sign_and_size_on_a_hand_made_series() -> None:
    points = change_points([10.0] * 10 + [8.0] * 10)
    assert [(point.index, point.mean_before, point.mean_after) for point in points] == [
        (10, 10.0, 8.0)]
    assert points[0].p_value <= 0.01
    assert points[0].change() == pytest.approx(-0.2)
    assert points[0].to_dict() == {"index": 10, "p_value": points[0].p_value,
                                   "mean_before": 10.0, "mean_after": 8.0,
                                   "change": pytest.approx(-0.2)}


@pytest.mark.parametrize("series", [[], [1.0], [1.0, 2.0, 9.0, 9.0, 9.0], [5.0] * 30])
def test_short_or_constant_series_has_none(series: list[float]) -> None:
    assert change_points(series) == []


def test_same_seed_same_answer() -> None:
    series = noisy(4).tolist()
    series[15:] = [value * 1.1 for value in series[15:]]
    assert change_points(series, seed=5) == change_points(series, seed=5)


@pytest.mark.parametrize("bad", [float("nan"), None, float("inf")])
def test_missing_values_are_refused(bad: float | None) -> None:
    series = [1.0, 2.0, bad, 1.5, 1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="at \\[2\\]; drop those runs"):
        change_points(series)  # type: ignore[arg-type]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="min_size >= 2"):
        change_points(noisy(0).tolist(), min_size=1)
