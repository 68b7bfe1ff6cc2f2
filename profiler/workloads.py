"""The workloads a service runs, and the padding each one costs.

- **bulk**: one `encode(texts, batch_size=B)` call over a whole request. sentence-transformers
  sorts the texts by length (characters, longest first) before cutting batches, so each batch
  pads little: an indexing job or a plain script.
- **stream**: batches of B texts in arrival (corpus) order, one `encode` call each: a service
  that batches requests as they arrive. Every batch pads to its longest text.
- **query**: one text per call: a search box. No padding, latency per call is the figure.

A *schedule* is the list of batches (as indices into the request) a workload encodes; padding
and FLOPs are computed from it and the tokenizer's counts, exactly, without timing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.measure.flops import batch_flops, flops_per_token
from profiler.measure.timing import synchronize
from profiler.storage import Record

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Encode = Callable[[list[str], int], Any]
Schedule = list[list[int]]

DESCRIPTIONS = {
    "bulk": "one `model.encode(texts, batch_size=B)` call over the whole request; "
            "sentence-transformers sorts the texts by length first, so batches pad little",
    "stream": "batches of B texts in arrival (corpus) order, one `encode` call each; "
              "every batch pads to its longest text",
    "query": "one text per `encode` call",
}


def model_encode(model: Any) -> Encode:
    """Wrap a SentenceTransformer's encode as an Encode."""
    def encode(texts: list[str], batch_size: int) -> Any:
        return model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                            convert_to_numpy=True)
    return encode


def request_of(corpus: Sequence[str], count: int) -> list[str]:
    """`count` texts: spread evenly over the corpus when it is larger, else cycled through it."""
    if count <= len(corpus):
        step = len(corpus) / count
        return [corpus[int(i * step)] for i in range(count)]
    return [corpus[i % len(corpus)] for i in range(count)]


def spread(texts: Sequence[str], count: int) -> list[str]:
    """At most `count` texts spread evenly over `texts` (all of them if fewer)."""
    return request_of(texts, min(count, len(texts)))


def bulk_schedule(texts: Sequence[str], batch_size: int) -> Schedule:
    """The batches `model.encode` forms: texts sorted longest first by characters."""
    order = [int(i) for i in np.argsort([-len(text) for text in texts])]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def stream_schedule(count: int, batch_size: int) -> Schedule:
    """Batches of `batch_size` texts in arrival order."""
    return [list(range(i, min(i + batch_size, count))) for i in range(0, count, batch_size)]


def query_schedule(count: int) -> Schedule:
    """One text per call."""
    return [[i] for i in range(count)]


def window_sorted_schedule(texts: Sequence[str], batch_size: int, window: int) -> Schedule:
    """Collect `window` batches of arrivals, sort them by length, cut them into batches."""
    span = batch_size * window
    batches: Schedule = []
    for start in range(0, len(texts), span):
        chunk = list(range(start, min(start + span, len(texts))))
        chunk.sort(key=lambda i: -len(texts[i]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def token_budget_schedule(tokens: Sequence[int], budget: int) -> Schedule:
    """Arrival order; a batch closes before texts × its longest text would pass `budget`."""
    batches: Schedule = []
    current: list[int] = []
    longest = 0
    for i, count in enumerate(tokens):
        if current and (len(current) + 1) * max(longest, count) > budget:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, count)
    return batches + ([current] if current else [])


def schedule_for(workload: str, texts: Sequence[str], batch_size: int) -> Schedule:
    """The schedule a workload runs over `texts` at `batch_size`."""
    if workload == "bulk":
        return bulk_schedule(texts, batch_size)
    if workload == "stream":
        return stream_schedule(len(texts), batch_size)
    return query_schedule(len(texts))


def token_counts(model: SentenceTransformer, texts: Sequence[str], limit: int) -> list[int]:
    """Tokens the model sees per text: special tokens included, cut at `limit`."""
    ids = model.tokenizer(list(texts), truncation=False)["input_ids"]
    return [min(len(row), limit) for row in ids]


@dataclass(frozen=True)
class Padding(Record):
    """How much of a schedule's work is padding: tokens and FLOPs, real against executed."""

    real_tokens: int
    padded_tokens: int
    real_share: float
    flops_executed: float
    flops_useful: float


def padding_of(schedule: Schedule, tokens: Sequence[int], config: dict[str, int]) -> Padding:
    """Real and padded tokens and FLOPs of a schedule; each batch pads to its longest text."""
    real = sum(tokens[i] for batch in schedule for i in batch)
    padded, executed = 0, 0.0
    for batch in schedule:
        longest = max(tokens[i] for i in batch)
        padded += longest * len(batch)
        executed += batch_flops(config, len(batch), longest)
    useful = sum(count * flops_per_token(config, count) for count in tokens if count)
    return Padding(real, padded, real / padded if padded else 1.0, executed, float(useful))


def run_schedule(encode: Encode, texts: Sequence[str], schedule: Schedule,
                 device: str) -> list[float]:
    """Encode batch by batch, one call each; return each call's seconds."""
    seconds = []
    for batch in schedule:
        chunk = [texts[i] for i in batch]
        synchronize(device)
        start = time.perf_counter()
        encode(chunk, len(chunk))
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def run_workload(workload: str, encode: Encode, texts: Sequence[str], batch_size: int,
                 device: str) -> list[float]:
    """Run one pass of a workload; return each call's seconds (bulk: one call)."""
    if workload == "bulk":
        synchronize(device)
        start = time.perf_counter()
        encode(list(texts), batch_size)
        synchronize(device)
        return [time.perf_counter() - start]
    return run_schedule(encode, texts, schedule_for(workload, texts, batch_size), device)


def window_latencies_ms(seconds: Sequence[float], schedule: Schedule,
                        window: int) -> list[float]:
    """Each text's wait from the moment its window is full to the end of its own batch."""
    latencies: list[float] = []
    for start in range(0, len(schedule), window):
        elapsed = 0.0
        for batch, took in zip(schedule[start:start + window], seconds[start:start + window],
                               strict=True):
            elapsed += took
            latencies += [1000 * elapsed] * len(batch)
    return latencies


GOLDEN = 0.6180339887498949  # round offsets spread evenly over the schedule, round after round


def round_share(schedule: Schedule, texts: int, round_: int, window: int = 1) -> Schedule:
    """A round's share: evenly spaced groups of `window` consecutive batches, about `texts` texts.

    The offset moves each round, so successive rounds sample every part of the schedule; the
    batches are the ones the whole request forms, so padding is the request's own.
    """
    groups = [schedule[i:i + window] for i in range(0, len(schedule), window)]
    per_group = max(1, sum(len(batch) for batch in groups[0]))
    count = min(len(groups), max(1, round(texts / per_group)))
    step, offset = len(groups) / count, (round_ * GOLDEN) % 1.0
    picked = sorted({min(len(groups) - 1, int((i + offset) * step)) for i in range(count)})
    return [batch for index in picked for batch in groups[index]]


def padded(schedule: Schedule, tokens: Sequence[int]) -> int:
    """Tokens a schedule computes: each batch's size times its longest text."""
    return sum(len(batch) * max(tokens[i] for i in batch) for batch in schedule)


@dataclass
class Share:
    """One contender of a comparison: a workload's schedule over the request, a share a round.

    `bulk` runs a round's batches as one `encode` call over their texts (which forms those very
    batches again: they are neighbours in length order); otherwise one call per batch. Each
    round's rate is scaled to the whole schedule by padded tokens, what a batch costs.
    """

    encode: Encode
    texts: Sequence[str]
    tokens: Sequence[int]
    schedule: Schedule
    bulk: bool
    batch_size: int
    device: str
    round_texts: int
    window: int = 1
    calls: list[list[float]] | None = None  # each round's call seconds, kept for latencies
    shares: list[Schedule] | None = None

    def __call__(self, round_: int) -> float:
        """Run round `round_`'s share; return texts/s of the whole request, estimated."""
        share = round_share(self.schedule, self.round_texts, round_, self.window)
        if self.bulk:
            seconds = [timed_encode(self.encode, [self.texts[i] for b in share for i in b],
                                    self.batch_size, self.device)]
        else:
            seconds = run_schedule(self.encode, self.texts, share, self.device)
        if round_ >= 0:  # round -1 is the warm-up
            self.calls = [*(self.calls or []), seconds]
            self.shares = [*(self.shares or []), share]
        scale = padded(self.schedule, self.tokens) / padded(share, self.tokens)
        return len(self.texts) / (sum(seconds) * scale)

    def fit(self, rate: float, seconds: float) -> None:
        """Size each round's share to take about `seconds` at `rate` (its warm-up's texts/s).

        Contenders of different speeds then take about the same time a round, so the minimum
        rounds fit the budget; a share still holds whole batches, at least one.
        """
        self.round_texts = max(1, round(seconds * rate))


def align(shares: Iterable[Share]) -> None:
    """Give shares of the same schedule the same size, the fewest texts any of them was fitted
    to: contenders of the same batch size then run the same batches in every round, so their
    paired ratio compares the same texts."""
    groups: dict[tuple[tuple[int, ...], ...], list[Share]] = {}
    for share in shares:
        groups.setdefault(tuple(map(tuple, share.schedule)), []).append(share)
    for group in groups.values():
        least = min(share.round_texts for share in group)
        for share in group:
            share.round_texts = least


def timed_encode(encode: Encode, texts: list[str], batch_size: int, device: str) -> float:
    """Seconds of one encode call, device work included."""
    synchronize(device)
    start = time.perf_counter()
    encode(texts, batch_size)
    synchronize(device)
    return time.perf_counter() - start
