"""Decide whether run B (newer) improved, regressed or kept each headline metric of run A (older).

Each metric is judged from its raw samples in both runs, and all the metrics of one comparison
are judged together so that the many comparisons do not add up to false alarms. The rules:

1. Log ratio. The judged statistic is a quantile of the samples (linear interpolation; 0.5 is
   the median, 0.95 the p95), and the change is d = log(stat(B)) − log(stat(A)), reported as
   exp(d) − 1 = B / A − 1. Every sample must be finite and above zero; otherwise the metric is
   INCONCLUSIVE.
2. Bootstrap. Each run's samples are resampled with replacement 2,000 times (a generator seeded
   with seed + the metric's index), the statistic is taken of every resample and d* is the log
   ratio of each pair. When history gives a run-to-run relative noise, both runs' statistics
   carry it, so each d* gets a normal draw of sd √(noise_A² + noise_B²) (noise·√2 when equal).
   Fewer than 3 samples in either run is INCONCLUSIVE, with p = 1, unless there is such a
   noise; then the noise alone is the uncertainty (d* = d + that normal draw). A tail quantile
   (q ≠ 0.5) needs 5 samples beyond it in each run, ⌈5 / min(q, 1 − q)⌉ in all (a p95: 100),
   noise or not: the p95 of ten calls lies between their two slowest, where one stall of a
   shared machine fell, and resampling them cannot show where the next run's will fall.
   Fewer is INCONCLUSIVE, with p = 1.
3. p-value of "changed by more than the margin" (H0: |d| ≤ L, with L = log(1 + margin)):
   p_up = (1 + #{d* ≤ L}) / 2001, p_down = (1 + #{d* ≥ −L}) / 2001 and
   p = min(1, 2·min(p_up, p_down)). With few samples and no noise from history, the bootstrap
   claims more than the samples can show (3 samples against 3 separate completely one time in
   ten by chance alone), so without noise p is the larger of the bootstrap's and that of a
   permutation test of the same statistic against the same margin: B's samples are brought
   back across the margin on the side the change points to, pooled with A's and dealt back at
   random 4,000 times, and p = min(1, 2·(1 + #{splits at least as far beyond}) / 4001). With 3
   samples a side that p is about 0.1 at least, so such a metric is never IMPROVED or REGRESSED.
4. Many metrics. Benjamini–Hochberg at q = 5% over all the metrics of the comparison decides
   which p-values are discoveries. With R discoveries among M metrics, a discovery's interval
   has level 1 − R·q/M (Benjamini–Yekutieli false-coverage-rate adjustment) and every other
   metric's has level 1 − q. The interval is the percentile interval of d* at that level,
   reported as exp(x) − 1.
5. Verdict. The margin is symmetric in log space: the interval is beyond it when it lies wholly
   above L or wholly below −L, and within it when it lies wholly inside [−L, L]. A discovery
   whose interval is beyond the margin is IMPROVED or REGRESSED, by the metric's direction
   ("higher" or "lower" is better). An interval within the margin is UNCHANGED. Anything else
   is INCONCLUSIVE.
6. The machine. The comparison may carry the interval of the relative change of the machine's
   own speed (a matmul's GFLOP/s) between the runs. When that interval lies wholly beyond the
   margin, a verdict on a speed metric that moved the same way as the machine (REGRESSED on a
   slower machine, IMPROVED on a faster one) becomes INCONCLUSIVE: a slower runner and a slower
   model cannot be told apart. Metrics not marked as calibrated (memory) keep their verdict.
7. Unreliable samples. A metric whose samples in either run were marked unreliable where they
   were measured (too noisy: CV above the threshold, or too few; profiler/measure/validity.py)
   is never IMPROVED or REGRESSED on its own: such a verdict becomes INCONCLUSIVE, with why.

A pair's name, direction and quantile must agree; its margin and calibration flag are B's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from profiler.storage import Record

STATES = ("IMPROVED", "REGRESSED", "UNCHANGED", "INCONCLUSIVE")
DEFAULT_MARGIN = 0.05
FDR_Q = 0.05
BOOTSTRAP_RESAMPLES = 2000
MIN_SAMPLES = 3
TAIL_SAMPLES = 5  # samples beyond a tail quantile that each run needs for it to be judged
DIRECTIONS = ("higher", "lower")
PERMUTATIONS = 2 * BOOTSTRAP_RESAMPLES  # random splits: enough to resolve p near 0.001
TIE = 1e-9  # log ratios closer than this are equal


@dataclass(frozen=True)
class Sampled:
    """One metric's samples in one run."""

    name: str
    direction: str
    samples: tuple[float, ...]
    quantile: float = 0.5
    margin: float = DEFAULT_MARGIN
    noise: float = 0.0
    calibrated: bool = True  # tracks the machine's speed (time, throughput); memory does not
    unreliable: str | None = None  # why these samples cannot carry a verdict on their own

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{self.name}: direction must be one of {DIRECTIONS}")
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"{self.name}: quantile must lie in [0, 1]")
        if not 0.0 < self.margin < 1.0:
            raise ValueError(f"{self.name}: margin must lie in (0, 1)")
        if not self.noise >= 0.0:
            raise ValueError(f"{self.name}: noise must be zero or more")
        object.__setattr__(self, "samples", tuple(float(x) for x in self.samples))


@dataclass(frozen=True)
class Verdict(Record):
    """How B's statistic of one metric compares with A's, and why."""

    name: str
    state: str
    change: float
    low: float
    high: float
    level: float
    margin: float
    p_value: float
    discovery: bool
    reason: str
    unreliable: str | None = None  # whose samples were unreliable, and why

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as plain data; undefined numbers become None."""
        return {key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in super().to_dict().items()}


@dataclass(frozen=True)
class Evidence:
    """One metric's observed log ratio, its bootstrap draws and p-value, or why it has none."""

    d: float
    draws: np.ndarray = field(compare=False)
    p_value: float
    problem: str = ""


def statistic(samples: Sequence[float] | np.ndarray, quantile: float) -> float:
    """Return the quantile of the samples (linear interpolation)."""
    return float(np.quantile(np.asarray(samples, dtype=float), quantile))


def benjamini_hochberg(p_values: list[float], q: float) -> list[bool]:
    """Mark the discoveries of the Benjamini–Hochberg step-up rule at false discovery rate q."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    passes = p[order] <= q * np.arange(1, p.size + 1) / max(p.size, 1)
    count = int(np.flatnonzero(passes)[-1]) + 1 if passes.any() else 0
    found = np.zeros(p.size, dtype=bool)
    found[order[:count]] = True
    return [bool(x) for x in found]


def log_ratio(a: np.ndarray, b: np.ndarray, quantile: float) -> float:
    """Return log(stat(B)) − log(stat(A)), or NaN where either is undefined or not above zero."""
    if a.size == 0 or b.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    old, new = statistic(a, quantile), statistic(b, quantile)
    return math.log(new) - math.log(old) if min(old, new) > 0 else math.nan


def quantiles_of_rows(values: np.ndarray, quantile: float) -> np.ndarray:
    """Return the quantile of every row of a 2-D array, interpolated as np.quantile does."""
    ordered = np.sort(values, axis=1)
    position = (values.shape[1] - 1) * quantile
    below = math.floor(position)
    above = min(below + 1, values.shape[1] - 1)
    return ordered[:, below] + (position - below) * (ordered[:, above] - ordered[:, below])


def bootstrap_log_ratios(a: np.ndarray, b: np.ndarray, quantile: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Draw log(stat(B*)) − log(stat(A*)) over resamples of both runs with replacement."""
    rows = BOOTSTRAP_RESAMPLES
    a_star = quantiles_of_rows(a[rng.integers(0, a.size, (rows, a.size))], quantile)
    b_star = quantiles_of_rows(b[rng.integers(0, b.size, (rows, b.size))], quantile)
    return np.asarray(np.log(b_star) - np.log(a_star))


def margin_p_value(draws: np.ndarray, bound: float) -> float:
    """Two-sided p-value, from draws of d, that |d| exceeds the log margin bound."""
    total = draws.size + 1
    p_up = (1 + np.count_nonzero(draws <= bound)) / total
    p_down = (1 + np.count_nonzero(draws >= -bound)) / total
    return float(min(1.0, 2 * min(p_up, p_down)))


def split_log_ratios(a: np.ndarray, b: np.ndarray, quantile: float,
                     deals: np.ndarray) -> np.ndarray:
    """Return the statistic's log ratio for each split of the pooled samples (rows of deals)."""
    dealt = np.concatenate([a, b])[deals]
    return np.asarray(np.log(quantiles_of_rows(dealt[:, a.size:], quantile))
                      - np.log(quantiles_of_rows(dealt[:, :a.size], quantile)))


def permutation_p_value(a: np.ndarray, b: np.ndarray, quantile: float, bound: float,
                        rng: np.random.Generator) -> float:
    """Two-sided permutation p-value that the log ratio lies beyond the log margin bound."""
    d = log_ratio(a, b, quantile)
    side = 1.0 if d >= 0 else -1.0  # the other side's p-value is at least a half
    deals = rng.permuted(np.tile(np.arange(a.size + b.size), (PERMUTATIONS, 1)), axis=1)
    # At the null's edge, B brought back across the margin is exchangeable with A; splits that
    # deal the runs back as they were must count as ties despite rounding.
    split = split_log_ratios(a, b * math.exp(-side * bound), quantile, deals)
    beyond = np.count_nonzero(side * split >= side * d - bound - TIE)
    return float(min(1.0, 2 * (1 + beyond) / (PERMUTATIONS + 1)))


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Return the central percentile interval of the draws at the given level."""
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def tail_needs(quantile: float) -> float:
    """Samples a run needs for its quantile to have TAIL_SAMPLES beyond it (0 for the median)."""
    tail = min(quantile, 1.0 - quantile)
    if tail >= 0.5:
        return 0
    return math.ceil(round(TAIL_SAMPLES / tail, 6)) if tail > 0 else math.inf


def sample_problem(a: np.ndarray, b: np.ndarray, noise_sd: float, quantile: float) -> str:
    """Say why the samples cannot be judged, or return an empty string."""
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return "a sample is not a finite number, so the change is undefined"
    if np.any(a <= 0) or np.any(b <= 0):
        return "a sample is zero or negative, so the log ratio is undefined"
    if min(a.size, b.size) == 0 or (min(a.size, b.size) < MIN_SAMPLES and noise_sd == 0):
        return (f"too few samples to judge (n={a.size} in A and {b.size} in B; "
                f"at least {MIN_SAMPLES} are needed without a noise estimate)")
    if min(a.size, b.size) < (needed := tail_needs(quantile)):
        return (f"too few samples for a p{100 * quantile:g} (n={a.size} in A and {b.size} in B; "
                f"it needs {needed:g}, so that {TAIL_SAMPLES} lie beyond it in each run)")
    return ""


def weigh(old: Sampled, new: Sampled, rng: np.random.Generator) -> Evidence:
    """Measure the log ratio of one metric, its bootstrap draws and its p-value."""
    if (old.name, old.direction, old.quantile) != (new.name, new.direction, new.quantile):
        raise ValueError(f"cannot compare {old.name} with {new.name}: the pair disagrees on "
                         "name, direction or quantile")
    a, b = np.asarray(old.samples), np.asarray(new.samples)
    noise_sd = math.hypot(old.noise, new.noise)
    problem = sample_problem(a, b, noise_sd, new.quantile)
    d = log_ratio(a, b, new.quantile)
    if problem:
        return Evidence(d, np.empty(0), 1.0, problem)
    few = min(a.size, b.size) < MIN_SAMPLES
    draws = (np.full(BOOTSTRAP_RESAMPLES, d) if few
             else bootstrap_log_ratios(a, b, new.quantile, rng))
    if noise_sd > 0:
        draws = draws + rng.normal(0.0, noise_sd, draws.size)
    bound = math.log1p(new.margin)
    p = margin_p_value(draws, bound)
    if noise_sd == 0:
        p = max(p, permutation_p_value(a, b, new.quantile, bound, rng))
    return Evidence(d, draws, p)


def percent(x: float) -> str:
    """Format a relative change as a signed whole percentage."""
    whole = round(100 * x)
    return "0%" if whole == 0 else f"{whole:+d}%"


def state_of(low: float, high: float, bound: float, discovery: bool, direction: str) -> str:
    """Name the state of a log interval against the log margin bound."""
    if discovery and (low > bound or high < -bound):
        return "IMPROVED" if (low > bound) == (direction == "higher") else "REGRESSED"
    return "UNCHANGED" if -bound <= low and high <= bound else "INCONCLUSIVE"


def reason_for(state: str, low: float, high: float, level: float, margin: float,
               beyond: bool) -> str:
    """Say in one sentence which interval and margin decided the state."""
    shown = f"{math.floor(100 * level + 1e-9)}% interval ({percent(low)} to {percent(high)})"
    edge = f"the {100 * margin:g}% margin"
    if state in ("IMPROVED", "REGRESSED"):
        return f"{state}: the whole {shown} lies beyond {edge}"
    if state == "UNCHANGED":
        return f"UNCHANGED: the whole {shown} lies within {edge}"
    if beyond:
        return (f"INCONCLUSIVE: the {shown} lies beyond {edge}, but its p-value does not "
                "survive the false-discovery control over all the metrics compared")
    return f"INCONCLUSIVE: the {shown} straddles {edge}"


def machine_moved(calibration: tuple[float, float] | None, margin: float) -> int:
    """Return +1 or −1 when the machine's speed interval lies wholly beyond the margin, else 0."""
    if calibration is None:
        return 0
    low, high = (math.log1p(x) for x in calibration)
    bound = math.log1p(margin)
    return 1 if low > bound else -1 if high < -bound else 0


def blame_machine(verdict: Verdict, new: Sampled,
                  calibration: tuple[float, float] | None) -> Verdict:
    """Turn a change that the machine's own change of speed explains into INCONCLUSIVE."""
    moved = machine_moved(calibration, new.margin)
    worse = -1 if verdict.state == "REGRESSED" else 1 if verdict.state == "IMPROVED" else 0
    if calibration is None or not new.calibrated or moved == 0 or moved != worse:
        return verdict
    speed = math.expm1(sum(math.log1p(x) for x in calibration) / 2)
    runner = "slower" if moved < 0 else "faster"
    reason = (f"INCONCLUSIVE: the machine's own speed changed by {percent(speed)} too: "
              f"cannot tell a {runner} runner from a {runner} model")
    return Verdict(**{**asdict(verdict), "state": "INCONCLUSIVE", "reason": reason})


def distrust(verdict: Verdict, old: Sampled, new: Sampled) -> Verdict:
    """Turn IMPROVED or REGRESSED into INCONCLUSIVE when either run's samples are unreliable."""
    found = [f"{run}: {why}" for run, why in (("before", old.unreliable),
                                                ("after", new.unreliable)) if why]
    if not found or verdict.state not in ("IMPROVED", "REGRESSED"):
        return verdict
    unreliable = "; ".join(found)
    reason = (f"INCONCLUSIVE: would be {verdict.state}, but the samples are unreliable "
              f"({unreliable}), so they cannot carry a verdict on their own")
    return replace(verdict, state="INCONCLUSIVE", reason=reason, unreliable=unreliable)


def decide(new: Sampled, evidence: Evidence, discovery: bool, level: float) -> Verdict:
    """Turn one metric's evidence into its verdict at the given interval level."""
    if evidence.problem:
        return Verdict(new.name, "INCONCLUSIVE", math.expm1(evidence.d), math.nan, math.nan, level,
                       new.margin, 1.0, False, f"INCONCLUSIVE: {evidence.problem}")
    low, high = percentile_interval(evidence.draws, level)
    bound = math.log1p(new.margin)
    state = state_of(low, high, bound, discovery, new.direction)
    reason = reason_for(state, math.expm1(low), math.expm1(high), level, new.margin,
                        low > bound or high < -bound)
    return Verdict(new.name, state, math.expm1(evidence.d), math.expm1(low), math.expm1(high),
                   level, new.margin, evidence.p_value, discovery, reason)


def judge(pairs: list[tuple[Sampled, Sampled]], q: float = FDR_Q, seed: int = 0,
          calibration: tuple[float, float] | None = None) -> list[Verdict]:
    """Judge every metric of B against A as one comparison, controlling false discoveries."""
    evidence = [weigh(old, new, np.random.default_rng(seed + index))
                for index, (old, new) in enumerate(pairs)]
    found = benjamini_hochberg([e.p_value for e in evidence], q)
    adjusted = 1 - sum(found) * q / max(len(pairs), 1)
    return [distrust(blame_machine(decide(new, e, hit, adjusted if hit else 1 - q), new,
                                   calibration), old, new)
            for (old, new), e, hit in zip(pairs, evidence, found, strict=True)]
