"""Headline metrics: the few figures per run that history keeps and comparisons judge.

A metric keeps its raw samples (at most SAMPLE_CAP, evenly thinned) so that a later run can be
judged against it statistically, and says which way is better and which statistic is judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.storage import Record

SAMPLE_CAP = 200  # samples kept per metric and run: query latencies are thinned to this


@dataclass(frozen=True)
class Metric(Record):
    """One headline figure of one run, with the samples behind it."""

    name: str  # stable across runs: the key history and comparisons match on
    title: str
    study: str
    unit: str
    direction: str  # "higher" or "lower" is better
    samples: tuple[float, ...]
    quantile: float = 0.5  # the statistic judged: 0.5 the median, 0.95 the p95
    calibrated: bool = True  # a machine that runs slower makes this figure worse (time, speed)
    validity: dict[str, Any] | None = None  # the measured configuration's check (measure/validity)

    def to_dict(self) -> dict[str, Any]:
        """Return the metric as plain data, samples as a list; no validity key when unchecked."""
        data = {**super().to_dict(), "samples": list(self.samples)}
        if self.validity is None:
            data.pop("validity")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        """Read a metric written by `to_dict`."""
        return cls(**{**data, "samples": tuple(float(x) for x in data["samples"])})


def bounded(samples: list[float], cap: int = SAMPLE_CAP) -> tuple[float, ...]:
    """Keep at most `cap` samples, evenly spread over the sorted values (quantiles survive)."""
    if len(samples) <= cap:
        return tuple(float(x) for x in samples)
    ordered = sorted(samples)
    step = (len(ordered) - 1) / (cap - 1)
    return tuple(float(ordered[round(i * step)]) for i in range(cap))


def metric(name: str, title: str, study: str, unit: str, direction: str, samples: list[float],
           **options: Any) -> Metric:
    """Build a metric with its samples bounded."""
    return Metric(name, title, study, unit, direction, bounded(samples), **options)
