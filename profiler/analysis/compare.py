"""Compare two runs' headline metrics: four-state verdicts that hold on noisy machines.

Each metric is judged by `verdicts.judge` on the raw samples of both runs. What a single run's
samples cannot see is the noise between runs (a shared machine can run 20% slower an hour
later), so each timing metric also carries a run-to-run noise term: the larger of its spread
over earlier comparable runs in the history and how far the machine's own calibration matmul
drifted within either build. The calibration's change between the two runs is shown beside
every metric, and a verdict that a slower (or faster) machine explains is not called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler.analysis.verdicts import (
    DEFAULT_MARGIN,
    FDR_Q,
    MIN_SAMPLES,
    Sampled,
    judge,
    statistic,
)
from profiler.history.store import fingerprint, incomparable, weights_change
from profiler.measure.metrics import Metric
from profiler.measure.validity import reason_of
from profiler.storage import Record

NOISE_RUNS = 10  # the newest comparable runs whose spread estimates run-to-run noise
MIN_NOISE_RUNS = 4
# Until MIN_NOISE_RUNS earlier runs tell the machine's own run-to-run noise, assume this much:
# on a shared 2-core machine one build's fp32 baseline ran 19% slower at its end than at its
# start, and two identical quick builds in a row differed by 30% on one metric.
PRIOR_NOISE = 0.10
PRIOR_NOISE_UNCALIBRATED = 0.02  # memory: a fresh process per probe, little run-to-run noise


@dataclass(frozen=True)
class Comparison(Record):
    """Run `after` judged against run `before`, metric by metric."""

    label: str  # "baseline", "previous" or "chosen"
    before: str
    after: str
    comparable: bool
    warning: str | None
    calibration: dict[str, float] | None  # change of the machine's matmul speed, with interval
    libraries: list[str]  # "torch 2.12.0 -> 2.13.0", beside the verdicts
    rows: list[dict[str, Any]] = field(default_factory=list)
    q: float = FDR_Q
    model_change: str | None = None  # the same model's weights changed between the runs

    @property
    def regressed(self) -> list[str]:
        """The metrics judged REGRESSED."""
        return [r["name"] for r in self.rows if r.get("state") == "REGRESSED"]

    def counts(self) -> dict[str, int]:
        """How many metrics got each verdict."""
        found: dict[str, int] = {}
        for row in self.rows:
            if row.get("state"):
                found[row["state"]] = found.get(row["state"], 0) + 1
        return found

    def detectable(self) -> float | None:
        """The median over the metrics of the smallest change each could be called for."""
        found = [r["detectable"] for r in self.rows if r.get("detectable") is not None]
        return float(np.median(found)) if found else None

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as plain data."""
        return {**super().to_dict(), "regressed": self.regressed, "counts": self.counts(),
                "detectable": self.detectable()}


def compare_runs(before: dict[str, Any], after: dict[str, Any], history: list[dict[str, Any]],
                 label: str, margins: dict[str, float] | None = None) -> Comparison:
    """Judge `after` against `before`; runs that differ in what they measured are only shown."""
    margins = margins or {}
    shared = _shared_metrics(before, after)
    reason = incomparable(before, after)
    libraries = library_changes(before, after)
    if reason is not None:
        rows = [_side_by_side(a, b) for a, b in shared]
        return Comparison(label, before["run_id"], after["run_id"], False,
                          f"not judged: {reason}", None, libraries, rows)
    calibration = calibration_change(before, after)
    interval = (calibration["low"], calibration["high"]) if calibration else None
    drift = max(calibration_drift(before), calibration_drift(after))
    pairs = [(_sampled(a, margins, noise=_noise(a, history, before, after, drift)),
              _sampled(b, margins, noise=0.0)) for a, b in shared]
    verdicts = judge(pairs, calibration=interval)
    rows = [{**_side_by_side(a, b), **v.to_dict(), "noise": pair[0].noise,
             "detectable": detectable(v.low, v.high, v.margin)}
            for (a, b), v, pair in zip(shared, verdicts, pairs, strict=True)]
    return Comparison(label, before["run_id"], after["run_id"], True, None, calibration,
                      libraries, rows, model_change=weights_change(before, after))


def detectable(low: float, high: float, margin: float) -> float | None:
    """The smallest relative change this comparison could call REGRESSED or IMPROVED.

    A change is called only when its whole interval lies beyond the margin; an interval as wide
    as this one (half-width h in log space) clears the margin L only when |d| > L + h.
    """
    if not (math.isfinite(low) and math.isfinite(high)) or min(low, high) <= -1:
        return None
    half = (math.log1p(high) - math.log1p(low)) / 2
    return math.expm1(math.log1p(margin) + half)


def _shared_metrics(before: dict[str, Any],
                    after: dict[str, Any]) -> list[tuple[Metric, Metric]]:
    old = {m["name"]: Metric.from_dict(m) for m in before["metrics"]}
    return [(old[m["name"]], Metric.from_dict(m)) for m in after["metrics"] if m["name"] in old]


def _sampled(m: Metric, margins: dict[str, float], noise: float) -> Sampled:
    return Sampled(m.name, m.direction, m.samples, quantile=m.quantile,
                   margin=margins.get(m.name, margins.get("default", DEFAULT_MARGIN)),
                   noise=noise, calibrated=m.calibrated, unreliable=reason_of(m.validity))


def _side_by_side(a: Metric, b: Metric) -> dict[str, Any]:
    before, after = statistic(a.samples, a.quantile), statistic(b.samples, b.quantile)
    return {"name": b.name, "title": b.title, "study": b.study, "unit": b.unit,
            "direction": b.direction, "before": before, "after": after,
            "n_before": len(a.samples), "n_after": len(b.samples),
            "ratio": after / before if before else None}


def _noise(metric: Metric, history: list[dict[str, Any]], before: dict[str, Any],
           after: dict[str, Any], drift: float) -> float:
    """Run-to-run relative noise of one metric: history's spread (a prior until there is
    enough history), or the machine's drift within either build, whichever is larger."""
    spread = history_noise(metric.name, history, before, after)
    if spread is None and len(metric.samples) < MIN_SAMPLES:
        return 0.0  # one figure a run (a searched capacity): only history can say its noise
    if spread is None:
        spread = PRIOR_NOISE if metric.calibrated else PRIOR_NOISE_UNCALIBRATED
    return max(spread, drift) if metric.calibrated else spread


def history_noise(name: str, history: list[dict[str, Any]], before: dict[str, Any],
                  after: dict[str, Any]) -> float | None:
    """Robust relative spread (1.4826 x MAD of the log) of a metric over comparable runs.

    Each model version (weights) is centred on its own median first, so a step in speed where
    the weights changed is not taken for noise.
    """
    key = fingerprint(after)
    found_runs: list[tuple[str, float]] = []
    for run in history:
        if run["run_id"] in (before["run_id"], after["run_id"]) or fingerprint(run) != key:
            continue
        found = next((m for m in run["metrics"] if m["name"] == name), None)
        if found and found["samples"] and min(found["samples"]) > 0:
            found_runs.append((str(run["model"].get("sha256")), math.log(
                statistic(tuple(found["samples"]), found["quantile"]))))
    found_runs = found_runs[-NOISE_RUNS:]
    if len(found_runs) < MIN_NOISE_RUNS:
        return None
    versions: dict[str, list[float]] = {}
    for version, value in found_runs:
        versions.setdefault(version, []).append(value)
    deviations = [value - float(np.median(values)) for values in versions.values()
                  if len(values) > 1 for value in values]
    if len(deviations) < MIN_NOISE_RUNS:
        return None
    logs = np.asarray(deviations)
    return float(1.4826 * np.median(np.abs(logs - np.median(logs))))


def calibration_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float] | None:
    """The machine's own matmul speed, after vs before: relative change and its interval."""
    a, b = before.get("calibration_gflops") or [], after.get("calibration_gflops") or []
    if len(a) < 3 or len(b) < 3 or min(a + b) <= 0:
        return None
    verdict = judge([(Sampled("calibration", "higher", tuple(a)),
                      Sampled("calibration", "higher", tuple(b)))])[0]
    return {"change": verdict.change, "low": verdict.low, "high": verdict.high,
            "drift_before": calibration_drift(before), "drift_after": calibration_drift(after)}


def calibration_drift(run: dict[str, Any]) -> float:
    """How far the machine's best speed moved between the start and the end of one build.

    The best of each half is compared: a single interrupted matmul slows one sample, while a
    machine that got slower (a noisy neighbour, thermal limits) slows them all.
    """
    samples = run.get("calibration_gflops") or []
    half = len(samples) // 2
    if half < 1 or min(samples) <= 0:
        return 0.0
    return abs(math.log(max(samples[half:]) / max(samples[:half])))


def library_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Library versions that differ between the two runs."""
    old, new = before.get("libraries", {}), after.get("libraries", {})
    return [f"{name} {old.get(name)} -> {new.get(name)}" for name in sorted({*old, *new})
            if old.get(name) != new.get(name)]
