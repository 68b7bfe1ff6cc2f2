"""Interleaved, paired, adaptive rounds: how every comparison in a build is measured.

Each round times every contender once, in a shuffled order, on the same share of the request,
so a slow minute slows all of them alike (asv's interleaving). A speedup and its interval come
from the per-round ratios (paired), so drift cancels instead of biasing whichever contender ran
last. Rounds go on until every figure that carries a claim has a 95% interval narrower than the
precision target, or the time budget runs out (MLPerf LoadGen's early stopping, Kalibera & Jones'
spend-where-the-variance-is): the outcome records which ended them.

Every comparison includes an A/A twin, the reference timed twice as two contenders: its "speedup"
must come out as 1 within the target, or the machine was too noisy for claims that small.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from profiler.storage import Record

ROUNDS_PLANNED = 2  # shares are sized so this many times the minimum rounds fit the budget
AA_SUFFIX = " (A/A)"  # the reference's twin: the no-op every comparison carries
Rates = dict[str, list[float]]  # contender -> texts/s per round, aligned by round


class RoundSettings(Protocol):
    """The timing settings a comparison's rounds follow (profiler.config.Timing has them)."""

    @property
    def precision(self) -> float: ...
    @property
    def budget_s(self) -> float: ...
    @property
    def workload_repeats(self) -> int: ...
    @property
    def max_rounds(self) -> int: ...


@dataclass(frozen=True)
class Precision:
    """When rounds stop: every claim within `target` (relative half-width), or the budget."""

    target: float  # 0.03: each claimed figure's 95% interval within ±3%
    budget_s: float  # wall seconds the rounds may take
    min_rounds: int = 3
    max_rounds: int = 200

    def share_s(self, contenders: int) -> float:
        """Seconds each contender's share of a round is sized to: twice the minimum rounds fit."""
        return self.budget_s / (ROUNDS_PLANNED * self.min_rounds * max(1, contenders))


def precision_of(timing: RoundSettings, share: float = 1.0) -> Precision:
    """The run's precision target, minimum rounds and `share` of its per-comparison budget."""
    return Precision(timing.precision, timing.budget_s * share, timing.workload_repeats,
                     timing.max_rounds)


@dataclass(frozen=True)
class Outcome(Record):
    """How a set of rounds ended, and how precise each claim was then."""

    rounds: int
    stopped_by: str  # precision | budget | max_rounds
    elapsed_s: float
    target: float
    budget_s: float
    widths: dict[str, float | None]  # claim -> relative half-width (None: not computable)
    share_s: float | None = None  # seconds a contender's share was sized to (None: by texts)

    @property
    def widest(self) -> float:
        """The widest claim's relative half-width (0 with no claims)."""
        return max((math.inf if w is None else w for w in self.widths.values()), default=0.0)


@dataclass(frozen=True)
class Ratio:
    """A speedup (new / base) from paired per-round ratios, with its 95% interval."""

    estimate: float
    low: float
    high: float
    rounds: int

    @property
    def half_width(self) -> float:
        """Relative half-width of the interval (inf when it cannot be computed)."""
        if not self.estimate or math.isinf(self.high):
            return math.inf
        return (self.high - self.low) / 2 / self.estimate

    @property
    def ci95(self) -> tuple[float, float]:
        """The interval as a pair."""
        return (self.low, self.high)

    def contains_one(self) -> bool:
        """Whether the interval allows "no change"."""
        return self.low <= 1.0 <= self.high


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def log_interval(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """Geometric mean of positive values and the 95% t-interval of it."""
    logs = np.log(np.asarray(values, dtype=float))
    centre = float(logs.mean())
    if logs.size < 2:
        return math.exp(centre), 0.0, math.inf
    spread = _t95(logs.size) * float(logs.std(ddof=1)) / math.sqrt(logs.size)
    return math.exp(centre), math.exp(centre - spread), math.exp(centre + spread)


def paired_ratio(base: list[float], new: list[float]) -> Ratio:
    """Speedup of `new` over `base` from round-aligned rates: each round's ratio, then their mean.

    Both lists hold one rate per round, in round order; a round missing from either (a shorter
    list) is left out.
    """
    count = min(len(base), len(new))
    if count == 0 or min(base[:count]) <= 0 or min(new[:count]) <= 0:
        raise ValueError("a paired ratio needs positive rates from at least one common round")
    ratios = np.asarray(new[:count], dtype=float) / np.asarray(base[:count], dtype=float)
    estimate, low, high = log_interval(ratios)
    return Ratio(estimate, low, high, count)


def rate_width(samples: list[float]) -> float:
    """Relative half-width of a rate's 95% interval across rounds (unpaired: drift included)."""
    if len(samples) < 2:
        return math.inf
    centre, low, high = log_interval(samples)
    return (high - low) / 2 / centre


def ratio_widths(rates: Rates, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Relative half-width of each (base, new) pair's paired speedup, keyed 'new/base'."""
    widths = {}
    for base, new in pairs:
        if len(rates.get(base, ())) < 2 or len(rates.get(new, ())) < 2:
            widths[f"{new}/{base}"] = math.inf
        else:
            widths[f"{new}/{base}"] = paired_ratio(rates[base], rates[new]).half_width
    return widths


Claims = Callable[[Rates], dict[str, float]]


def run_rounds(contenders: dict[str, Callable[[int], float]], precision: Precision,
               claims: Claims, seed: int = 0,
               on_round: Callable[[int, Rates, dict[str, float]], None] | None = None,
               clock: Callable[[], float] = time.perf_counter,
               share_s: float | None = None) -> tuple[Rates, Outcome]:
    """Time every contender once per round, shuffled, until `claims` are precise or time is up.

    `contenders[name](round)` runs one round's share of the work and returns texts/s;
    `claims(rates)` returns the relative half-width of every figure that must meet the target.
    A round is not started when the rounds so far say it would end past the budget. `share_s`
    records how long the caller sized each share to take (`Precision.share_s`).
    """
    rng = random.Random(seed)
    rates: Rates = {name: [] for name in contenders}
    started, rounds = clock(), 0
    widths: dict[str, float] = {}
    while True:
        order = list(contenders)
        rng.shuffle(order)
        for name in order:
            rates[name].append(contenders[name](rounds))
        rounds += 1
        widths = claims(rates)
        if on_round is not None:
            on_round(rounds, rates, widths)
        elapsed = clock() - started
        if rounds >= precision.min_rounds and all(w <= precision.target
                                                  for w in widths.values()):
            return rates, _outcome(rounds, "precision", elapsed, precision, widths, share_s)
        if rounds >= precision.max_rounds:
            return rates, _outcome(rounds, "max_rounds", elapsed, precision, widths, share_s)
        if rounds >= precision.min_rounds and \
                elapsed + elapsed / rounds > precision.budget_s:
            return rates, _outcome(rounds, "budget", elapsed, precision, widths, share_s)


def _outcome(rounds: int, why: str, elapsed: float, precision: Precision,
             widths: dict[str, float], share_s: float | None) -> Outcome:
    finite = {k: (v if math.isfinite(v) else None) for k, v in widths.items()}
    return Outcome(rounds, why, elapsed, precision.target, precision.budget_s, finite, share_s)


@dataclass(frozen=True)
class AaCheck(Record):
    """The no-op comparison: the reference against its own twin."""

    speedup: float
    ci95: tuple[float, float]
    half_width: float
    target: float
    passed: bool
    noise_floor: float  # no claim smaller than this is made when the check failed
    rounds: int


def aa_check(rates: Rates, reference: str, target: float) -> AaCheck | None:
    """Judge the reference against its A/A twin: within the target, and containing 1."""
    twin = reference + AA_SUFFIX
    if len(rates.get(reference, ())) < 2 or len(rates.get(twin, ())) < 2:
        return None
    ratio = paired_ratio(rates[reference], rates[twin])
    passed = ratio.contains_one() and ratio.half_width <= target
    floor = max(abs(ratio.estimate - 1), abs(ratio.low - 1), abs(ratio.high - 1))
    return AaCheck(ratio.estimate, ratio.ci95, ratio.half_width, target, passed,
                   0.0 if passed else floor, ratio.rounds)
