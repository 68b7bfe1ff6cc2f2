"""Find change points in a benchmark's history with E-Divisive means (Matteson & James 2014).

The same algorithm shape as Apache Otava (formerly Hunter): divisive binary segmentation.
Every segment's best split is the one that maximises the energy statistic q̂ (exponent 1,
absolute differences) of the runs before it against a stretch of the runs after it. The best
split over all segments is kept only when a permutation test within its segment finds it
significant, and the search stops at the first split that is not.
It makes no assumption about the shape of the noise, so it suits skewed timings.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.storage import Record

PERMUTATION_CHUNK = 32  # permutations per batch: bounds memory at CHUNK * n * n floats
TIE_TOLERANCE = 1e-9  # a permuted q̂ equal to the observed one up to rounding counts as extreme


@dataclass(frozen=True)
class ChangePoint(Record):
    """A significant shift in a series: series[index] is the first run of the new regime."""

    index: int
    p_value: float
    mean_before: float
    mean_after: float

    def change(self) -> float:
        """Return the relative shift of the mean, mean_after / mean_before - 1 (nan from 0)."""
        return self.mean_after / self.mean_before - 1 if self.mean_before else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Return the change point, with its relative change, as plain data."""
        return {**super().to_dict(), "change": self.change()}


def change_points(series: Sequence[float], alpha: float = 0.01, permutations: int = 199,
                  min_size: int = 3, seed: int = 0) -> list[ChangePoint]:
    """Return the series' significant change points by index; [] when too short or constant."""
    values = _finite_values(series)
    _check_options(alpha, permutations, min_size)
    if len(values) < 2 * min_size or np.ptp(values) == 0:
        return []
    rng = np.random.default_rng(seed)
    cuts, p_values = [0, len(values)], {}
    while (best := _best_split(values, cuts, min_size)) is not None:
        start, end, index, q = best
        p_value = _p_value(values[start:end], q, min_size, permutations, rng)
        if p_value > alpha:
            break
        p_values[index] = p_value
        bisect.insort(cuts, index)
    return [_describe(values, cuts, position, p_values[cut])
            for position, cut in enumerate(cuts[1:-1], start=1)]


def _finite_values(series: Sequence[float]) -> np.ndarray:
    values = np.asarray(series, dtype=np.float64)  # None becomes nan
    if values.ndim != 1:
        raise ValueError(f"change points need a 1-D series, got shape {values.shape}")
    if not np.isfinite(values).all():
        missing = np.flatnonzero(~np.isfinite(values)).tolist()
        raise ValueError(f"series has missing or non-finite values at {missing}; drop those runs")
    return values


def _check_options(alpha: float, permutations: int, min_size: int) -> None:
    if not 0 < alpha < 1 or permutations < 1 or min_size < 2:
        raise ValueError(f"need 0 < alpha < 1, permutations >= 1 and min_size >= 2, got "
                         f"alpha={alpha}, permutations={permutations}, min_size={min_size}")


def _best_split(values: np.ndarray, cuts: list[int],
                min_size: int) -> tuple[int, int, int, float] | None:
    """Return (start, end, index, q̂) of the best split over all segments, or None if none fits."""
    best: tuple[int, int, int, float] | None = None
    for start, end in itertools.pairwise(cuts):
        if end - start < 2 * min_size:
            continue
        q = _q_table(values[None, start:end], min_size)[0]
        tau, kappa = np.unravel_index(np.argmax(q), q.shape)
        if best is None or q[tau, kappa] > best[3]:
            best = (start, end, start + min_size + int(tau), float(q[tau, kappa]))
    return best


def _q_table(segments: np.ndarray, min_size: int) -> np.ndarray:
    """Return q̂ of x = row[:tau] against y = row[tau:kappa] for each row of segments (b, n).

    Entry [:, i, j] is tau = min_size + i, kappa = 2 * min_size + j; -inf where y is shorter
    than min_size. Letting y stop before the segment's end (kappa) is what lets a short
    excursion in the middle of a long segment stand out, as in Matteson & James.
    """
    size = segments.shape[1]
    dist = np.abs(segments[:, :, None] - segments[:, None, :])
    sums = np.zeros((len(segments), size + 1, size + 1))
    sums[:, 1:, 1:] = dist.cumsum(axis=1).cumsum(axis=2)  # sums[:, a, b] = dist[:a, :b].sum()
    tau = np.arange(min_size, size - min_size + 1)[:, None]
    kappa = np.arange(2 * min_size, size + 1)[None, :]
    n, m = tau, kappa - tau
    head, both, whole = sums[:, tau, tau], sums[:, tau, kappa], sums[:, kappa, kappa]
    left, cross, right = head / 2, both - head, (whole - 2 * both + head) / 2  # pair sums
    # n m / (n + m) * (2/(n m) Σ|x-y| - Σ|x-x'| / C(n,2) - Σ|y-y'| / C(m,2))
    q = (2 * cross - 2 * m * left / (n - 1) - 2 * n * right / np.maximum(m - 1, 1)) / (n + m)
    return np.where(m >= min_size, q, -np.inf)


def _p_value(segment: np.ndarray, q: float, min_size: int, permutations: int,
             rng: np.random.Generator) -> float:
    """Return the share of shuffles of segment whose best q̂ reaches q (observed one counted)."""
    extreme = 0
    for done in range(0, permutations, PERMUTATION_CHUNK):
        count = min(PERMUTATION_CHUNK, permutations - done)
        shuffled = rng.permuted(np.tile(segment, (count, 1)), axis=1)
        best = _q_table(shuffled, min_size).max(axis=(1, 2))
        extreme += int(np.sum(best >= q - TIE_TOLERANCE * abs(q)))
    return (1 + extreme) / (permutations + 1)


def _describe(values: np.ndarray, cuts: list[int], position: int, p_value: float) -> ChangePoint:
    """Return the change point at cuts[position] with the means of its neighbouring segments."""
    before = values[cuts[position - 1]:cuts[position]]
    after = values[cuts[position]:cuts[position + 1]]
    return ChangePoint(index=cuts[position], p_value=p_value,
                       mean_before=float(before.mean()), mean_after=float(after.mean()))
