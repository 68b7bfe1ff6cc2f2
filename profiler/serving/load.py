"""The load a service sees: requests arriving as a seeded Poisson process, and when a run has
served enough of them to judge a latency percentile (MLPerf LoadGen's early-stopping rule)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

CONFIDENCE = 0.99  # a run passes when we are this sure the percentile is within its target


@dataclass(frozen=True)
class Request:
    """One request: when it is scheduled to arrive, which corpus texts it carries, its length."""

    index: int
    arrival_s: float
    texts: tuple[int, ...]  # indices into the corpus
    tokens: int  # its longest text's tokens: what a batch holding it pads to

    @property
    def size(self) -> int:
        """Texts in the request."""
        return len(self.texts)


def poisson_schedule(rate: float, count: int, tokens: list[int],
                     texts_per_request: tuple[int, int] = (1, 1), seed: int = 0) -> list[Request]:
    """`count` arrivals of a Poisson process at `rate` per second, computed before the run.

    The count is fixed, not the duration, so a run always holds the requests its percentile
    needs (LoadGen's minimum query count). Each request carries between texts_per_request[0]
    and [1] texts (uniform), drawn from the corpus whose token counts are `tokens`.
    """
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / rate, count)
    arrivals = np.cumsum(gaps) - gaps[0]  # the first request opens the run
    low, high = texts_per_request
    requests = []
    for index, arrival in enumerate(arrivals):
        size = int(rng.integers(low, high + 1))
        picked = tuple(int(i) for i in rng.integers(0, len(tokens), size))
        requests.append(Request(index, float(arrival), picked, max(tokens[i] for i in picked)))
    return requests


@functools.lru_cache(maxsize=256)
def min_queries(percentile: float, over: int, confidence: float = CONFIDENCE) -> int:
    """The fewest queries a run needs, `over` of them beyond the latency target, to say with
    `confidence` that the `percentile` latency is within it (LoadGen: p99, 0 over: 459; 1: 662).

    The smallest n with P(Binomial(n, 1 - percentile/100) <= over) <= 1 - confidence.
    """
    tail = 1 - percentile / 100
    low, high = over + 1, max(over + 2, 2 * math.ceil((over + 1) / tail))
    while binom.cdf(over, high, tail) > 1 - confidence:
        low, high = high, 2 * high
    while low < high:  # the CDF falls as n grows: bisect for the first n that is small enough
        middle = (low + high) // 2
        if binom.cdf(over, middle, tail) <= 1 - confidence:
            high = middle
        else:
            low = middle + 1
    return low


def misses_allowed(percentile: float, requests: int) -> float:
    """The most requests that may miss the target while the percentile still holds."""
    return (100 - percentile) * requests / 100  # not (1 - p/100) * n: 0.0999... at p90


def judge(requests: int, over: int, percentile: float, confidence: float = CONFIDENCE) -> str:
    """`pass` when enough requests were served to trust the percentile within its target; `fail`
    when more than the percentile's share missed it; `short` when the run cannot tell yet."""
    if over > misses_allowed(percentile, requests):
        return "fail"
    if requests >= min_queries(percentile, over, confidence):
        return "pass"
    return "short"
