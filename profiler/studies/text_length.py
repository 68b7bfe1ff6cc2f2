"""Text-length study: how throughput and tokens change with the length of each text."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler.config import Settings
from profiler.errors import ProfilerError
from profiler.measure.metrics import Metric, metric
from profiler.measure.rounds import (
    Outcome,
    Rates,
    paired_ratio,
    precision_of,
    rate_width,
    run_rounds,
)
from profiler.measure.stats import Stats, summarize
from profiler.measure.timing import timed
from profiler.storage import Record
from profiler.studies.base import Study, StudyContext, emit, quick_subset, round_progress


@dataclass(frozen=True)
class LengthPoint:
    """Measurements for texts cut to one target length."""

    target_chars: int
    mean_chars: float
    texts_per_repeat: int
    tokens_per_text_mean: float
    raw_tokens_per_text_mean: float
    truncated_share: float
    throughput_texts_per_s: Stats
    tokens_per_s: float
    batch_latency_ms: Stats


@dataclass(frozen=True)
class Slowdown(Record):
    """How many times slower per text the longest length is than the shortest (paired)."""

    estimate: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class TextLengthResult(Record):
    """Each target length's figures, shortest first, and how throughput falls with length."""

    batch_size: int
    max_seq_length: int
    points: list[LengthPoint]
    correlation: dict[str, float | None]  # pearson, spearman: median throughput with length
    truncation_chars: float | None  # where the model starts cutting texts, by extrapolation
    rounds: Outcome | None = None  # None: measured before interleaved rounds
    slowdown: Slowdown | None = None  # None: one length, or measured before rounds


def texts_of_length(corpus: list[str], target: int, count: int) -> list[str]:
    """Join the corpus's words and cut them at word boundaries into `count` texts of ~`target`."""
    words = " ".join(corpus).split()
    texts, position = [], 0
    for _ in range(count):
        text = words[position % len(words)][:target]
        position += 1
        while len(text) + 1 + len(words[position % len(words)]) <= target:
            text += " " + words[position % len(words)]
            position += 1
        texts.append(text)
    return texts


def correlations(x: list[float], y: list[float]) -> dict[str, float | None]:
    """Pearson and Spearman (Pearson on average ranks) correlation of y with x."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"pearson": None, "spearman": None}
    return {"pearson": float(np.corrcoef(x, y)[0, 1]),
            "spearman": float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])}


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


class TextLengthStudy(Study):
    """Throughput, tokens and truncation at each target text length."""

    NAME = "text_length"
    TITLE = "Text length"
    RESULT = TextLengthResult

    @classmethod
    def validate(cls, settings: Settings, texts: list[str]) -> None:
        """Refuse a corpus with too few characters to build the longest texts."""
        longest = max(settings.text_lengths)
        available = len(" ".join(texts))
        if available < longest:
            raise ProfilerError(f"corpus has {available} characters, too few for texts of "
                                f"{longest} characters (text_lengths)")

    def run(self, ctx: StudyContext) -> TextLengthResult:
        """Measure every target length at a fixed batch size."""
        lengths = (quick_subset(ctx.settings.text_lengths) if ctx.settings.quick
                   else tuple(sorted(ctx.settings.text_lengths)))  # shortest first, as given or not
        points, outcome, rates = measure_lengths(ctx, lengths)
        medians = [p.throughput_texts_per_s.median for p in points]
        shortest, longest = rates[label(lengths[0])], rates[label(lengths[-1])]
        slowdown = paired_ratio(longest, shortest) if len(lengths) > 1 else None
        batch = ctx.settings.length_batch_size
        # Scalene's view of the longest texts: where long inputs go (two batches; --quick: one)
        views = 1 if ctx.settings.quick else 2
        ctx.profiling.view(lambda: ctx.model.encode(
            texts_of_length(ctx.texts, max(lengths), views * batch), batch_size=batch))
        return TextLengthResult(
            batch_size=batch, max_seq_length=ctx.info.max_seq_length, points=points,
            rounds=outcome, correlation=correlations([float(n) for n in lengths], medians),
            slowdown=None if slowdown is None else Slowdown(slowdown.estimate, slowdown.ci95),
            truncation_chars=truncation_chars(points, ctx.info.max_seq_length))

    @staticmethod
    def headline(result: TextLengthResult) -> dict[str, Any]:
        """Throughput at the shortest and longest length, their ratio, where truncation starts."""
        first, last = result.points[0], result.points[-1]
        short = first.throughput_texts_per_s.median
        long = last.throughput_texts_per_s.median
        paired = result.slowdown
        return {"shortest_chars": first.target_chars, "shortest_texts_per_s": short,
                "longest_chars": last.target_chars, "longest_texts_per_s": long,
                "slowdown_x": paired.estimate if paired else short / long if long else None,
                "slowdown_ci95": list(paired.ci95) if paired else None,
                "pearson": result.correlation["pearson"],
                "truncation_chars": result.truncation_chars}

    @staticmethod
    def metrics(result: TextLengthResult) -> list[Metric]:
        """Throughput per round at the shortest and the longest length."""
        first, last = result.points[0], result.points[-1]
        return [metric(f"{name}_texts_per_s", f"{name} texts ({point.target_chars} chars)",
                       TextLengthStudy.NAME, "texts/s", "higher",
                       point.throughput_texts_per_s.samples)
                for name, point in (("short", first), ("long", last))]


def label(length: int) -> str:
    """A length's contender name in the rounds: `1024 characters`."""
    return f"{length} characters"


@dataclass
class Length:
    """One target length's texts, and each batch's latency over the counted rounds."""

    length: int
    texts: list[str]
    batch: int
    encode: Callable[..., Any]  # model.encode
    device: str
    latencies_ms: list[float] = field(default_factory=list)

    def __call__(self, round_: int) -> float:
        """Encode the texts once, batch by batch; texts/s (round -1: a warm-up, not kept)."""
        batches = [self.texts[i:i + self.batch] for i in range(0, len(self.texts), self.batch)]
        seconds = [timed(functools.partial(self.encode, b, batch_size=self.batch), self.device)
                   for b in batches]
        if round_ >= 0:
            self.latencies_ms.extend(1000 * s for s in seconds)
        return len(self.texts) / sum(seconds)


def measure_lengths(ctx: StudyContext, lengths: tuple[int, ...]
                    ) -> tuple[list[LengthPoint], Outcome, Rates]:
    """Every length in interleaved rounds: each round encodes each length's texts once, in a
    shuffled order, until the endpoints' throughput and their ratio are within the precision
    target or the budget is spent."""
    batch, timing = ctx.settings.length_batch_size, ctx.settings.timing
    runners = {label(n): Length(n, length_texts(ctx, n), batch, ctx.model.encode, ctx.device)
               for n in lengths}
    emit("config", label=f"{len(lengths)} text lengths, interleaved rounds", index=0, total=1)
    least_s = timing.min_time_s / timing.workload_repeats  # so the fewest rounds add up to it
    for runner in runners.values():  # warm every length's shapes once, uncounted; a quick
        if stretch(runner, runner(-1), ctx.texts, least_s):  # one gets more texts, warmed too
            runner(-1)
    ends = (label(lengths[0]), label(lengths[-1]))

    def claims(rates: Rates) -> dict[str, float]:  # the gate's two metrics and their ratio
        widths = {name: rate_width(rates[name]) for name in dict.fromkeys(ends)}
        if ends[0] != ends[1] and len(rates[ends[0]]) > 1:
            widths["slowdown"] = paired_ratio(rates[ends[1]], rates[ends[0]]).half_width
        return widths

    contenders: dict[str, Callable[[int], float]] = dict(runners)
    rates, outcome = run_rounds(contenders, precision_of(timing), claims, seed=3,
                                on_round=round_progress)
    emit("done", label="text lengths", summary=f"{outcome.rounds} rounds, {outcome.stopped_by}")
    return [length_point(ctx, runners[label(n)], rates[label(n)]) for n in lengths], outcome, rates


def stretch(runner: Length, rate: float, corpus: list[str], min_time_s: float) -> bool:
    """Give a length whose pass (at `rate` texts/s) is shorter than `min_time_s` enough whole
    batches of texts to last that long: each length is timed for at least `timing.min_time_s`
    over the fewest rounds, as every repeated measurement is."""
    seconds = len(runner.texts) / rate
    if seconds >= min_time_s:
        return False
    batches = math.ceil(len(runner.texts) / runner.batch * min_time_s / seconds)
    runner.texts = texts_of_length(corpus, runner.length, batches * runner.batch)
    return True


def length_texts(ctx: StudyContext, length: int) -> list[str]:
    """Texts of one target length, more of the shorter ones so every length takes similar time."""
    batch = ctx.settings.length_batch_size
    wanted = ctx.settings.timing.texts_per_repeat * 100 / max(length, 100)
    return texts_of_length(ctx.texts, length, batch * max(1, math.ceil(wanted / batch)))


def length_point(ctx: StudyContext, runner: Length, rates: list[float]) -> LengthPoint:
    """One length's figures from its rounds; its tokens before and after truncation."""
    texts = runner.texts
    raw = [len(ids) for ids in ctx.model.tokenizer(texts)["input_ids"]]
    limit = ctx.info.max_seq_length
    throughput = summarize(rates)
    kept = [min(n, limit) for n in raw]
    return LengthPoint(
        target_chars=runner.length, mean_chars=float(np.mean([len(t) for t in texts])),
        texts_per_repeat=len(texts), tokens_per_text_mean=float(np.mean(kept)),
        raw_tokens_per_text_mean=float(np.mean(raw)),
        truncated_share=sum(n > limit for n in raw) / len(raw),
        throughput_texts_per_s=throughput,
        tokens_per_s=float(np.mean(kept)) * throughput.median,
        batch_latency_ms=summarize(runner.latencies_ms))


def truncation_chars(points: list[LengthPoint], max_seq_length: int) -> float | None:
    """Estimate the text length (characters) at which the model starts cutting input."""
    untruncated = [p for p in points if p.truncated_share == 0 and p.raw_tokens_per_text_mean]
    if not untruncated or not max_seq_length:
        return None
    chars_per_token = (sum(p.mean_chars for p in untruncated)
                       / sum(p.raw_tokens_per_text_mean for p in untruncated))
    return chars_per_token * max_seq_length
