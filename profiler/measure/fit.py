"""Least-squares straight lines with a 95% confidence interval on the slope."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiler.storage import Record


@dataclass(frozen=True)
class LinearFit(Record):
    """y = slope * x + intercept, fitted by ordinary least squares."""

    slope: float
    intercept: float
    r2: float | None
    slope_ci95: tuple[float, float] | None  # None with fewer than 3 points
    n: int


def linear_fit(x: list[float], y: list[float]) -> LinearFit:
    """Fit a line; the slope's interval uses Student's t with n - 2 degrees of freedom."""
    if len(x) != len(y) or len(x) < 2 or len(set(x)) < 2:
        raise ValueError("a line needs at least two distinct x values, one y each")
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = (float(v) for v in np.polyfit(xs, ys, 1))
    residuals = ys - (slope * xs + intercept)
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1 - float((residuals ** 2).sum()) / total if total > 0 else None
    return LinearFit(slope, intercept, r2, _slope_ci(xs, residuals, slope), len(xs))


def _slope_ci(xs: np.ndarray, residuals: np.ndarray, slope: float) -> tuple[float, float] | None:
    n = len(xs)
    if n < 3:
        return None
    from scipy import stats

    stderr = float(np.sqrt((residuals ** 2).sum() / (n - 2) / ((xs - xs.mean()) ** 2).sum()))
    half = float(stats.t.ppf(0.975, n - 2)) * stderr
    return (slope - half, slope + half)
