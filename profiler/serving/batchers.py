"""Batchers: each decides, from the requests queued so far and the time, whether to close a batch
now (and which requests it holds) or when to look again. They know nothing of clocks or models,
so the same rule runs on the real clock (engine.serve) and on virtual time (engine.simulate)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from profiler.config import BATCHERS
from profiler.serving.load import Request

Queue = deque[Request]
Batch = list[Request]


def texts_in(requests: Queue | Batch) -> int:
    """Texts in a queue or a batch."""
    return sum(r.size for r in requests)


def padded_tokens(batch: Batch) -> int:
    """Tokens a batch computes: every text padded to the batch's longest."""
    return texts_in(batch) * max(r.tokens for r in batch)


def take_up_to(queue: Queue, texts: int) -> Batch:
    """Requests from the head of the queue while they fit in `texts` (at least one)."""
    batch = [queue.popleft()]
    while queue and texts_in(batch) + queue[0].size <= texts:
        batch.append(queue.popleft())
    return batch


class Batcher(ABC):
    """Turns a queue into batches; one instance per worker (it may hold formed batches)."""

    KIND: ClassVar[str]

    @abstractmethod
    def take(self, queue: Queue, now: float, more: bool) -> Batch | float:
        """A batch to compute now (its requests leave `queue`), or the time to look again
        (math.inf: when the next request arrives). `more`: whether requests are still to come."""

    def held(self) -> int:
        """Requests taken from the queue and not yet handed out as a batch."""
        return 0

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The setting, as the report and the JSON name it."""

    @property
    def label(self) -> str:
        """`dynamic (max_batch 32, max_wait_ms 5)`."""
        return f"{self.KIND} ({', '.join(f'{k} {v:g}' for k, v in self.params.items())})"


@dataclass
class Dynamic(Batcher):
    """Close a batch when it is full or its oldest request has waited `max_wait_ms`."""

    max_batch: int
    max_wait_ms: float
    KIND: ClassVar[str] = "dynamic"

    def take(self, queue: Queue, now: float, more: bool) -> Batch | float:
        """Full, or the oldest has waited long enough, or nothing more is coming: a batch."""
        if not queue:
            return math.inf
        deadline = queue[0].arrival_s + self.max_wait_ms / 1000
        if texts_in(queue) >= self.max_batch or now >= deadline or not more:
            return take_up_to(queue, self.max_batch)
        return deadline

    @property
    def params(self) -> dict[str, Any]:
        """max_batch and max_wait_ms."""
        return {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms}


@dataclass
class TokenBudget(Batcher):
    """Take queued requests in arrival order while the padded batch stays within `max_tokens`;
    no timer (text-embeddings-inference's `--max-batch-tokens`)."""

    max_tokens: int
    KIND: ClassVar[str] = "token_budget"

    def take(self, queue: Queue, now: float, more: bool) -> Batch | float:
        """Whatever is queued, up to the budget: the worker never waits for company."""
        if not queue:
            return math.inf
        batch = [queue.popleft()]
        while queue and padded_tokens([*batch, queue[0]]) <= self.max_tokens:
            batch.append(queue.popleft())
        return batch

    @property
    def params(self) -> dict[str, Any]:
        """max_tokens."""
        return {"max_tokens": self.max_tokens}


@dataclass
class SortWindow(Batcher):
    """Take up to `window` batches' worth of queued requests, sort them by length and cut them
    into batches of `max_batch` texts, shortest first, after at most `max_wait_ms` of patience
    (as infinity's batch handler does)."""

    max_batch: int
    window: int
    max_wait_ms: float = 2.0
    pending: list[Batch] = field(default_factory=list)
    KIND: ClassVar[str] = "sort_window"

    def take(self, queue: Queue, now: float, more: bool) -> Batch | float:
        """A batch formed earlier; else sort the window and cut it, once it is worth it."""
        if self.pending:
            return self.pending.pop(0)
        if not queue:
            return math.inf
        deadline = queue[0].arrival_s + self.max_wait_ms / 1000
        if texts_in(queue) < self.max_batch and now < deadline and more:
            return deadline
        window = sorted(take_up_to(queue, self.window * self.max_batch), key=lambda r: r.tokens)
        batches: list[Batch] = [[]]
        for request in window:
            if batches[-1] and texts_in(batches[-1]) + request.size > self.max_batch:
                batches.append([])
            batches[-1].append(request)
        self.pending = batches[1:]
        return batches[0]

    def held(self) -> int:
        """Requests in batches already cut."""
        return sum(len(b) for b in self.pending)

    @property
    def params(self) -> dict[str, Any]:
        """max_batch, window and max_wait_ms."""
        return {"max_batch": self.max_batch, "window": self.window,
                "max_wait_ms": self.max_wait_ms}


def make(kind: str, params: dict[str, Any]) -> Batcher:
    """A fresh batcher of `kind` with `params` (as `Batcher.params` wrote them)."""
    if kind == "dynamic":
        return Dynamic(int(params["max_batch"]), float(params["max_wait_ms"]))
    if kind == "token_budget":
        return TokenBudget(int(params["max_tokens"]))
    if kind == "sort_window":
        return SortWindow(int(params["max_batch"]), int(params["window"]),
                          float(params["max_wait_ms"]))
    raise ValueError(f"unknown batcher {kind!r}")


assert (Dynamic.KIND, TokenBudget.KIND, SortWindow.KIND) == BATCHERS, "config.BATCHERS must match"
