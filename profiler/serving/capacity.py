"""The highest arrival rate whose latency percentile stays within its target, found the way
MLPerf LoadGen finds it: from a rate that passes, double until a run fails, bisect to a stated
resolution, and confirm the answer with one more run. A search with a time budget stops
bisecting when the budget is spent and says so: its bracket is then wider than asked."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from profiler.serving.engine import Trial
from profiler.serving.load import min_queries
from profiler.storage import Record

Run = Callable[[float, int], Trial]  # (rate per second, requests) -> its trial
MAX_DOUBLINGS = 12
EXTEND_TO = 4  # an undecided run may grow to this many times the early-stopping count


@dataclass(frozen=True)
class Capacity(Record):
    """A capacity and the runs that found it."""

    rate_rps: float  # the highest rate that passed; 0 when none did
    confirmed: bool  # a further run at that rate passed too
    failed_rps: float | None  # the lowest rate above it that did not pass (failed, or still too
    # short to tell at the longest run); None: every rate tried passed
    resolution: float
    runs: tuple[Trial, ...]
    ended: str = "resolution"  # or "budget": the time budget ran out before the resolution

    @property
    def bracket(self) -> float | None:
        """How far apart the passing rate and the lowest failing one are (0.25: 25%)."""
        return self.failed_rps / self.rate_rps - 1 if self.failed_rps and self.rate_rps else None

    def describe(self, percentile: float, target_ms: float) -> str:
        """`312 requests/s at p95 ≤ 100 ms (confirmed)`."""
        if not self.rate_rps:
            undecided = bool(self.runs) and self.runs[-1].verdict == "short"
            return (f"no rate down to {self.failed_rps or 0:,.1f} requests/s "
                    f"{'was shown to keep' if undecided else 'kept'} p{percentile:g} ≤ "
                    f"{target_ms:g} ms" + (" (the slowest rate's runs were still too few to "
                                           "judge)" if undecided else ""))
        state = "confirmed" if self.confirmed else "not confirmed"
        if self.ended == "budget":
            state += "; its time budget ended the search" + (
                f" within {100 * self.bracket:.0f}%" if self.bracket is not None else "")
        least = "at least " if self.failed_rps is None else ""
        return (f"{least}{self.rate_rps:,.1f} requests/s at p{percentile:g} ≤ {target_ms:g} ms "
                f"({state})")


@dataclass
class Search:
    """How to run one rate: at least `min_requests` requests (the early-stopping count with none
    beyond the target) and `min_run_s`; a run too short to judge grows up to `max_run_s`."""

    run: Run
    min_run_s: float
    max_run_s: float
    percentile: float
    extend_to: int = EXTEND_TO  # an undecided run may grow to this many early-stopping counts
    budget_s: float | None = None  # no run starts that would end past this (from the start)

    @property
    def floor_rps(self) -> float:
        """The slowest rate searched (see `floor_rps`)."""
        return floor_rps(self.percentile, self.max_run_s, self.extend_to)

    def requests(self, rate: float) -> int:
        """A run's requests at `rate` (see `requests_at`)."""
        return requests_at(rate, self.min_run_s, self.percentile)

    def trial(self, rate: float, deadline: float = math.inf) -> list[Trial]:
        """Run `rate`; a run too short to judge is run again, as long as a run may be, unless
        that longer run would end past `deadline` (then it stays undecided: not a pass)."""
        count = self.requests(rate)
        trials = [self.run(rate, count)]
        # a slow rate may take longer than max_run_s to reach a few misses' worth of requests
        cap = max(math.ceil(rate * self.max_run_s),
                  self.extend_to * min_queries(self.percentile, 0))
        if trials[-1].verdict == "short" and count < cap and \
                time.monotonic() + cap / rate < deadline:  # once, as long as it may be
            trials.append(self.run(rate, cap))
        return trials


def requests_at(rate: float, min_run_s: float, percentile: float) -> int:
    """A run's requests at `rate`: the early-stopping count, and at least `min_run_s`."""
    return max(min_queries(percentile, 0), math.ceil(rate * min_run_s))


def floor_rps(percentile: float, max_run_s: float, extend_to: int = EXTEND_TO) -> float:
    """Below this rate, the fewest requests a run needs would take longer than `extend_to`
    times the longest run: the search goes no lower, and no run is made below it."""
    return min_queries(percentile, 0) / (extend_to * max_run_s)


def find_capacity(search: Search, start_rps: float, resolution: float,
                  on_trial: Callable[[Trial], None] = lambda t: None) -> Capacity:
    """Search the capacity from `start_rps`; every run is kept in the result."""
    runs: list[Trial] = []
    deadline = math.inf if search.budget_s is None else time.monotonic() + search.budget_s

    def spent(rate: float = 0.0, times: int = 1) -> bool:  # or would be, after `times` runs
        return time.monotonic() + times * (search.requests(rate) / rate if rate else 0.0) \
            >= deadline

    cut = [False]  # the last rate run was left undecided: its longer run would end too late

    def passes(rate: float, bounded: bool = True) -> bool:
        # until a rate has passed, an undecided run is always extended: the search must find
        # one; after, an extension that would end past the budget is not run
        trials = search.trial(rate, deadline if bounded else math.inf)
        runs.extend(trials)
        for trial in trials:
            on_trial(trial)
        cut[0] = bounded and math.isfinite(deadline) and len(trials) == 1 and \
            trials[0].verdict == "short"
        return trials[-1].verdict == "pass"

    def unconfirmed() -> Capacity:  # the budget left no time to confirm `low`
        ended = "budget" if high is None or high / low - 1 > resolution else "resolution"
        return Capacity(low, False, high, resolution, tuple(runs), ended)

    low, high = max(start_rps, search.floor_rps), None
    while not passes(low, bounded=False):
        high, low = low, low / 2
        if low < search.floor_rps:  # halving goes below the slowest rate: run that rate last
            if high / search.floor_rps - 1 <= resolution:  # none passed: the capacity is
                return Capacity(0.0, False, high, resolution, tuple(runs))  # below it
            low = search.floor_rps
    for _ in range(MAX_DOUBLINGS):
        if high is not None or spent(2 * low):
            break
        if passes(2 * low):
            low *= 2
        else:
            high = 2 * low
    if high is None:  # it kept up with every rate tried: a lower bound, said to be one
        if spent(2 * low):
            return Capacity(low, False, None, resolution, tuple(runs), "budget")
        return Capacity(low, passes(low), None, resolution, tuple(runs))
    while high / low - 1 > resolution and not spent(math.sqrt(low * high)):
        middle = math.sqrt(low * high)  # halves the ratio's log: the relative step
        if passes(middle):
            low = middle
        else:
            high = middle
    if spent(low):  # not confirmed: the budget went on narrowing the bracket
        return unconfirmed()
    if passes(low):
        return Capacity(low, True, high, resolution, tuple(runs))
    if cut[0]:  # the confirmation was too short to judge, and no time is left to run it longer
        return unconfirmed()
    lower = low / (1 + resolution)  # the answer sat on the edge: one step down, passed twice?
    if lower >= search.floor_rps and spent(lower, times=2):
        return unconfirmed()
    if lower >= search.floor_rps and passes(lower) and passes(lower):
        return Capacity(lower, True, low, resolution, tuple(runs))
    return Capacity(low, False, high, resolution, tuple(runs))  # passed once, not confirmed
