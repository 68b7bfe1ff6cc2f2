"""Summary statistics whose field list is the JSON schema; raw samples are kept."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiler.storage import Record


@dataclass(frozen=True)
class Stats(Record):
    """Summary of repeated samples of one quantity."""

    n: int
    median: float
    mean: float
    min: float
    max: float
    stdev: float
    cv: float
    p50: float
    p95: float
    p99: float
    samples: list[float]


def summarize(samples: list[float]) -> Stats:
    """Summarize samples; the coefficient of variation is stdev / mean (0 for one sample)."""
    if not samples:
        raise ValueError("no samples to summarize")
    values = np.asarray(samples, dtype=float)
    mean = float(values.mean())
    stdev = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    p50, p95, p99 = (float(x) for x in np.percentile(values, [50, 95, 99]))
    return Stats(n=len(values), median=float(np.median(values)), mean=mean,
                 min=float(values.min()), max=float(values.max()), stdev=stdev,
                 cv=stdev / mean if mean else 0.0, p50=p50, p95=p95, p99=p99,
                 samples=[float(x) for x in values])


def speedup(base: list[float], new: list[float],
            paired: bool) -> tuple[float, tuple[float, float]]:
    """Speedup of `new` over `base` (rates, higher is faster) with its 95% interval.

    Paired samples come from the same interleaved rounds (profiler/measure/rounds.py), one per
    round: the mean of each round's ratio, so drift cancels. Samples measured apart (runs written
    before rounds) give the ratio of medians with a bootstrap interval.
    """
    from profiler.measure.rounds import paired_ratio

    if paired and min(len(base), len(new)) >= 2:
        ratio = paired_ratio(base, new)
        return ratio.estimate, ratio.ci95
    return float(np.median(new) / np.median(base)), speedup_interval(base, new)


def speedup_interval(base_samples: list[float], samples: list[float], rounds: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """Bootstrap a 95% interval of median(samples) / median(base_samples) (unpaired)."""
    if not base_samples or not samples or rounds < 1 or min(base_samples) <= 0:
        raise ValueError("a speedup interval needs positive base samples, samples and rounds")
    rng = np.random.default_rng(seed)
    base = rng.choice(np.asarray(base_samples, dtype=float), size=(rounds, len(base_samples)))
    new = rng.choice(np.asarray(samples, dtype=float), size=(rounds, len(samples)))
    low, high = np.percentile(np.median(new, axis=1) / np.median(base, axis=1), [2.5, 97.5])
    return float(low), float(high)
