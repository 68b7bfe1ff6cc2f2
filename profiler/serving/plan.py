"""Beyond one machine: replicas of this machine a target load needs, by simulation with the
service-time model this run fitted, under random and join-shortest-queue load balancing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from profiler.serving.batchers import Batcher
from profiler.serving.engine import ServiceModel, Slo, Trial, simulate
from profiler.serving.load import Request, min_queries
from profiler.storage import Record

BALANCES = ("random", "jsq")
CURVE_LOADS = (0.5, 0.75, 0.9, 1.0, 1.1, 1.25)  # of the target rate, at the chosen replicas
MAX_REPLICAS = 256  # the most replicas simulated: beyond, the plan says "more than" this
MAX_REQUESTS = 100_000  # the most requests one planning run simulates
SLO_SPANS = 50  # a planning run lasts at least this many latency targets: an overloaded queue
# grows by (load - 1) x the run's length, so a short run may end before it misses the target


@dataclass(frozen=True)
class Fleet(Record):
    """Replicas that hold the latency target at the target rate, and the latency they give."""

    balance: str
    target_rps: float
    replicas: int | None  # None: more than MAX_REPLICAS, or no capacity to plan from
    latency_ms: dict[str, float] | None  # at the target rate with that many replicas
    curve: tuple[dict[str, float], ...]  # offered load -> p50, p95, p99 with those replicas


@dataclass
class Simulator:
    """Runs the schedule a rate and duration give on virtual time, for any replica count."""

    schedule: Callable[[float, int, int], list[Request]]  # rate, requests, seed -> requests
    batcher: Callable[[], Batcher]
    service: ServiceModel
    slo: Slo
    queue_limit: int
    text_tokens: Callable[[int], int]
    schedules: dict[tuple[float, int, int], list[Request]] = field(  # drawn ones, reused
        default_factory=dict, init=False, repr=False)

    def run(self, rate: float, replicas: int = 1, balance: str = "random",
            count: int | None = None, seed: int = 0) -> Trial:
        """One simulated run at `rate` over `replicas` replicas."""
        count = count or self.requests(rate)
        if (rate, count, seed) not in self.schedules:  # a plan runs one schedule many times
            self.schedules[rate, count, seed] = self.schedule(rate, count, seed)
        return simulate(self.schedules[rate, count, seed],
                        [self.batcher() for _ in range(replicas)], self.service, self.slo, rate,
                        balance, seed, self.queue_limit, self.text_tokens)

    def requests(self, rate: float) -> int:
        """Several times the early-stopping count, and at least 5 s (and SLO_SPANS latency
        targets) of arrivals."""
        seconds = max(5.0, SLO_SPANS * self.slo.target_ms / 1000)
        return min(MAX_REQUESTS, max(4 * min_queries(self.slo.percentile, 0),
                                     math.ceil(seconds * rate)))


def replicas_for(simulator: Simulator, target_rps: float, capacity_rps: float,
                 balance: str) -> Fleet:
    """The fewest replicas whose simulated run at `target_rps` holds the latency target:
    doubling from half of target ÷ capacity until a count holds, then bisecting below it."""
    if capacity_rps <= 0 or target_rps / capacity_rps > 2 * MAX_REPLICAS:
        return Fleet(balance, target_rps, None, None, ())
    trials: dict[int, Trial] = {}

    def fits(count: int) -> bool:
        trials[count] = simulator.run(target_rps, count, balance)
        return trials[count].verdict == "pass"

    low, count = 0, max(1, math.ceil(target_rps / capacity_rps / 2))  # low: known too few
    while not fits(count):
        low, count = count, 2 * count
        if count > MAX_REPLICAS:
            return Fleet(balance, target_rps, None, None, ())
    while count - low > 1:
        middle = (low + count) // 2
        if fits(middle):
            count = middle
        else:
            low = middle
    curve = tuple(_point(simulator.run(load * target_rps, count, balance), load)
                  for load in CURVE_LOADS)
    return Fleet(balance, target_rps, count, _latency(trials[count]), curve)


def _latency(trial: Trial) -> dict[str, float]:
    return {key: trial.latency_ms[key] for key in ("p50", "p95", "p99")}


def _point(trial: Trial, load: float) -> dict[str, float]:
    return {"load": load, "rate_rps": trial.rate_rps, **_latency(trial),
            "dropped": float(trial.dropped)}
