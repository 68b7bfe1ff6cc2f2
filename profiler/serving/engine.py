"""Serving a schedule of requests with a batcher: on a clock with a real model (`serve`), or on
virtual time with a service-time model and any number of replicas (`simulate`).

Latency counts from each request's *scheduled* arrival, so a stalled worker shows in every
request queued behind it (no coordinated omission). A bounded queue drops requests past its
limit and counts them; they count as beyond the latency target.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from profiler.serving.batchers import Batch, Batcher, Queue, padded_tokens, texts_in
from profiler.serving.load import Request, judge, misses_allowed
from profiler.storage import Record


class Clock(Protocol):
    """Seconds since some start, and a way to wait for a later one."""

    def now(self) -> float:
        """Seconds now."""

    def sleep_until(self, when: float) -> None:
        """Return at `when` (or at once if it has passed)."""


class WallClock:
    """time.perf_counter, with sleeps."""

    def now(self) -> float:
        """perf_counter seconds."""
        return time.perf_counter()

    def sleep_until(self, when: float) -> None:
        """Sleep until perf_counter reaches `when`."""
        delay = when - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


@dataclass
class Slo:
    """A latency target: `percentile` of requests within `target_ms`."""

    target_ms: float
    percentile: float


@dataclass
class Log:
    """What happened to each request and batch of one run."""

    arrival: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    batches: list[tuple[int, int, float]] = field(default_factory=list)  # texts, padded, seconds
    dropped: int = 0
    over: int = 0

    def served(self, batch: Batch, start: float, done: float, slo: Slo | None) -> None:
        """Record a computed batch."""
        for request in batch:
            self.arrival.append(request.arrival_s)
            self.start.append(start)
            self.done.append(done)
            if slo and 1000 * (done - request.arrival_s) > slo.target_ms:
                self.over += 1
        self.batches.append((texts_in(batch), padded_tokens(batch), done - start))


@dataclass(frozen=True)
class Trial(Record):
    """One run at one offered rate: its latency percentiles, where the time went, the verdict."""

    rate_rps: float
    duration_s: float
    requests: int  # scheduled
    served: int
    dropped: int
    over_target: int  # served beyond the latency target, plus dropped
    verdict: str  # pass | fail | short (too few requests to judge the percentile)
    stopped_early: bool  # given up once the target could no longer be met
    latency_ms: dict[str, float]  # p50, p95, p99, mean, max; and the SLO percentile's value
    queue_ms_mean: float
    compute_ms_mean: float
    batch_texts_mean: float
    batch_texts: dict[str, int]  # texts in a batch -> how many batches
    padding_share: float  # of computed tokens
    busy_share: float  # of the run's time spent computing
    achieved_rps: float


def summarize(log: Log, rate: float, requests: Sequence[Request], slo: Slo, real_tokens: int,
              elapsed: float, stopped: bool, workers: int = 1) -> Trial:
    """The trial a run's log makes (`workers`: replicas sharing it; busy share is per worker)."""
    latency = 1000 * (np.array(log.done) - np.array(log.arrival))
    queued = 1000 * (np.array(log.start) - np.array(log.arrival))
    padded = sum(b[1] for b in log.batches)
    over = log.over + log.dropped + (len(requests) - len(log.done) - log.dropped)  # never served
    percentiles = {f"p{q}": _pct(latency, q) for q in (50, 95, 99)}
    busy = sum(b[2] for b in log.batches)
    return Trial(
        rate_rps=rate, duration_s=requests[-1].arrival_s if requests else 0.0,
        requests=len(requests), served=len(log.done), dropped=log.dropped, over_target=over,
        verdict=judge(len(requests), over, slo.percentile), stopped_early=stopped,
        latency_ms={**percentiles, "slo": _pct(latency, slo.percentile),
                    "mean": float(latency.mean()) if len(latency) else math.nan,
                    "max": float(latency.max()) if len(latency) else math.nan},
        queue_ms_mean=float(queued.mean()) if len(queued) else math.nan,
        compute_ms_mean=float((latency - queued).mean()) if len(latency) else math.nan,
        batch_texts_mean=float(np.mean([b[0] for b in log.batches])) if log.batches else 0.0,
        batch_texts={str(k): v for k, v in sorted(Counter(b[0] for b in log.batches).items())},
        padding_share=1 - real_tokens / padded if padded else 0.0,
        busy_share=busy / (elapsed * workers) if elapsed > 0 else 0.0,
        achieved_rps=len(log.done) / elapsed if elapsed > 0 else 0.0)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def real_tokens_of(batches: list[Batch], tokens: Callable[[int], int]) -> int:
    """Tokens the batches' texts hold before padding."""
    return sum(tokens(i) for batch in batches for r in batch for i in r.texts)


def serve(requests: Sequence[Request], batcher: Batcher, compute: Callable[[Batch], Any],
          slo: Slo, rate: float, clock: Clock | None = None, queue_limit: int = 10_000,
          text_tokens: Callable[[int], int] = lambda i: 0,
          give_up: bool = True) -> tuple[Trial, Log]:
    """Serve the schedule with one worker: requests join the queue at their scheduled times,
    the batcher forms batches, `compute` runs each (the model, tokenization included).

    With `give_up`, the run stops once more requests missed the target than the percentile
    allows, counting those that have already waited longer than the target, queued or not yet
    admitted (a search needs only the verdict, and an overload's queue need not drain);
    without, it serves every request, and the bounded queue is what keeps an overload finite
    (a latency curve needs the whole run).
    """
    clock = clock or WallClock()
    log, queue, formed = Log(), deque[Request](), []
    allowed = misses_allowed(slo.percentile, len(requests))
    began, index, stopped, woken = clock.now(), 0, False, 0.0
    while index < len(requests) or queue or batcher.held():
        now = max(clock.now() - began, woken)  # a clock due at `wake` is there, whatever rounds
        index = _admit(requests, index, now, queue, batcher, queue_limit, log)
        decision = batcher.take(queue, now, index < len(requests))
        if isinstance(decision, list):
            start = clock.now() - began
            compute(decision)
            log.served(decision, start, clock.now() - began, slo)
            formed.append(decision)
            if give_up and log.over + log.dropped + _overdue(
                    queue, requests, index, clock.now() - began, slo) > allowed:
                stopped = True
                break
            continue
        following = requests[index].arrival_s if index < len(requests) else math.inf
        wake = min(decision, following)
        if math.isinf(wake):
            break
        clock.sleep_until(began + wake)
        woken = wake
    elapsed = clock.now() - began
    return summarize(log, rate, requests, slo, real_tokens_of(formed, text_tokens), elapsed,
                     stopped), log


def _overdue(queue: Queue, requests: Sequence[Request], index: int, now: float,
             slo: Slo) -> int:
    """Requests not yet served that have waited past the target already: certain misses.
    The queue and the schedule are both in arrival order (batchers take from the front)."""
    since = now - slo.target_ms / 1000
    queued = sum(1 for _ in itertools.takewhile(lambda r: r.arrival_s < since, queue))
    due = bisect.bisect_left(requests, since, lo=index, key=lambda r: r.arrival_s) - index
    return queued + max(0, due)


def _admit(requests: Sequence[Request], index: int, now: float, queue: Queue, batcher: Batcher,
           limit: int, log: Log) -> int:
    """Queue every request scheduled by `now`; drop those past the queue's limit."""
    while index < len(requests) and requests[index].arrival_s <= now:
        if len(queue) + batcher.held() >= limit:
            log.dropped += 1
        else:
            queue.append(requests[index])
        index += 1
    return index


@dataclass(frozen=True)
class ServiceModel(Record):
    """Seconds a batch takes: fixed + per text + per padded token, fitted to measured batches,
    with the measured spread around the fit (multiplicative residuals, in the order served)."""

    fixed_s: float
    per_text_s: float
    per_token_s: float
    residuals: tuple[float, ...] = (1.0,)
    batches: int = 0
    r2: float | None = None

    def seconds(self, texts: int, padded: int) -> float:
        """The fitted time of a batch."""
        return self.fixed_s + self.per_text_s * texts + self.per_token_s * padded

    @classmethod
    def fit(cls, batches: list[tuple[int, int, float]], keep: int = 2000) -> ServiceModel:
        """Least squares with coefficients >= 0 over (texts, padded tokens, seconds)."""
        from scipy.optimize import nnls

        rows = np.array([[1.0, t, p] for t, p, _ in batches])
        seconds = np.array([s for _, _, s in batches])
        coef, _ = nnls(rows, seconds)
        predicted = rows @ coef
        ratios = seconds / np.maximum(predicted, 1e-9)
        spread = ratios[-keep:]  # in the order served: slow spells stay together
        total = float(((seconds - seconds.mean()) ** 2).sum())
        r2 = 1 - float(((seconds - predicted) ** 2).sum()) / total if total > 0 else None
        return cls(float(coef[0]), float(coef[1]), float(coef[2]),
                   tuple(float(x) for x in spread), len(batches), r2)


def simulate(requests: Sequence[Request], batchers: list[Batcher], service: ServiceModel,
             slo: Slo, rate: float, balance: str = "random", seed: int = 0,
             queue_limit: int = 10_000,
             text_tokens: Callable[[int], int] = lambda i: 0) -> Trial:
    """Serve the schedule on virtual time with one worker per batcher (replica).

    Each arrival goes to a replica chosen at random or to the one with the shortest queue
    (`jsq`: queued, held and in service); a batch takes the service model's time, times a
    next of the measured residuals (see ServiceModel). Ties go to the lowest replica, and an
    arrival comes before a replica's event at the same time.
    """
    rng = np.random.default_rng(seed)
    replicas = len(batchers)
    # each replica walks the measured residuals from its own random start: a slow spell of the
    # machine slows several batches in a row, as it did when they were measured
    walk = [int(rng.integers(len(service.residuals))) for _ in range(replicas)]
    queues = [deque[Request]() for _ in range(replicas)]
    busy = [False] * replicas
    events = _Least(replicas, math.inf)  # a replica's next event: its batch done, or a look
    loads = _Least(replicas, 0)  # jsq's measure: queued, held and in service
    log, real = Log(), 0
    index, now = 0, 0.0

    def load(r: int) -> None:
        loads.set(r, len(queues[r]) + batchers[r].held() + busy[r])

    def decide(r: int, at: float) -> None:
        nonlocal real
        decision = batchers[r].take(queues[r], at, index < len(requests))
        if isinstance(decision, list):
            walk[r] = (walk[r] + 1) % len(service.residuals)
            factor = service.residuals[walk[r]]
            seconds = service.seconds(texts_in(decision), padded_tokens(decision)) * factor
            log.served(decision, at, at + seconds, slo)
            real += sum(text_tokens(i) for request in decision for i in request.texts)
            busy[r] = True
            events.set(r, at + seconds)
        else:
            events.set(r, decision)
        load(r)

    while True:
        following = requests[index].arrival_s if index < len(requests) else math.inf
        soonest, due = events.least()
        if math.isinf(following) and math.isinf(due):
            break
        if following <= due:
            now = following
            r = int(rng.integers(replicas)) if balance == "random" else loads.least()[0]
            if len(queues[r]) + batchers[r].held() >= queue_limit:
                log.dropped += 1
            else:
                queues[r].append(requests[index])
                load(r)
            index += 1
            if not busy[r]:
                decide(r, now)
            continue
        now = due
        busy[soonest] = False
        decide(soonest, now)
    elapsed = max(now, requests[-1].arrival_s if requests else 0.0)
    return summarize(log, rate, requests, slo, real, elapsed, False, replicas)


class _Least:
    """A value per replica, and the least of them (the lowest replica among equals), kept in a
    heap whose outdated entries are dropped when they reach the top: O(log n) an event."""

    def __init__(self, size: int, value: float) -> None:
        self.values = [value] * size
        self.heap = [(value, r) for r in range(size)]

    def set(self, r: int, value: float) -> None:
        """Give replica `r` a new value."""
        if value != self.values[r]:
            self.values[r] = value
            heapq.heappush(self.heap, (value, r))

    def least(self) -> tuple[int, float]:
        """The replica with the least value, and that value."""
        while self.heap[0][0] != self.values[self.heap[0][1]]:
            heapq.heappop(self.heap)
        value, r = self.heap[0]
        return r, value
