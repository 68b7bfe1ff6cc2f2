"""Text-length study: how throughput and tokens change with the length of each text."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from profiler.config import Settings
from profiler.errors import ProfilerError
from profiler.measure.metrics import Metric, metric
from profiler.measure.stats import Stats, summarize
from profiler.measure.timing import RepeatPlan, repeat, timed
from profiler.studies.base import Study, StudyContext, emit, measure_each, quick_subset


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

    @classmethod
    def validate(cls, settings: Settings, texts: list[str]) -> None:
        """Refuse a corpus with too few characters to build the longest texts."""
        longest = max(settings.text_lengths)
        available = len(" ".join(texts))
        if available < longest:
            raise ProfilerError(f"corpus has {available} characters, too few for texts of "
                                f"{longest} characters (text_lengths)")

    def run(self, ctx: StudyContext) -> dict[str, Any]:
        """Measure every target length at a fixed batch size."""
        lengths = (quick_subset(ctx.settings.text_lengths) if ctx.settings.quick
                   else ctx.settings.text_lengths)
        points = measure_each(lengths, "{} characters", lambda n: measure_length(ctx, n),
                              lambda p: f"{p.throughput_texts_per_s.median:,.0f} texts/s")
        medians = [p.throughput_texts_per_s.median for p in points]
        batch = ctx.settings.length_batch_size
        with ctx.profiling.on():  # Scalene's view of the longest texts: where long inputs go
            ctx.model.encode(texts_of_length(ctx.texts, max(lengths), 2 * batch), batch_size=batch)
        return {"batch_size": ctx.settings.length_batch_size,
                "max_seq_length": ctx.info.max_seq_length,
                "points": [asdict(p) for p in points],
                "correlation": correlations([float(n) for n in lengths], medians),
                "truncation_chars": truncation_chars(points, ctx.info.max_seq_length)}

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, Any]:
        """Throughput at the shortest and longest length, their ratio, where truncation starts."""
        first, last = result["points"][0], result["points"][-1]
        short = first["throughput_texts_per_s"]["median"]
        long = last["throughput_texts_per_s"]["median"]
        return {"shortest_chars": first["target_chars"], "shortest_texts_per_s": short,
                "longest_chars": last["target_chars"], "longest_texts_per_s": long,
                "slowdown_x": short / long if long else None,
                "pearson": result["correlation"]["pearson"],
                "truncation_chars": result["truncation_chars"]}

    @staticmethod
    def metrics(result: dict[str, Any]) -> list[Metric]:
        """Throughput per repeat at the shortest and the longest length."""
        first, last = result["points"][0], result["points"][-1]
        return [metric(f"{name}_texts_per_s", f"{name} texts ({point['target_chars']} chars)",
                       TextLengthStudy.NAME, "texts/s", "higher",
                       point["throughput_texts_per_s"]["samples"])
                for name, point in (("short", first), ("long", last))]


def measure_length(ctx: StudyContext, length: int) -> LengthPoint:
    """Time encoding texts of one target length; count their tokens before and after truncation."""
    batch = ctx.settings.length_batch_size
    # Long texts cost more per text: scale the workload so every length takes similar time.
    wanted = ctx.settings.timing.texts_per_repeat * 100 / max(length, 100)
    count = batch * max(1, math.ceil(wanted / batch))
    texts = texts_of_length(ctx.texts, length, count)
    batches = [texts[i:i + batch] for i in range(0, count, batch)]
    latencies: list[float] = []

    def one_repeat() -> float:
        seconds = [timed(functools.partial(ctx.model.encode, b, batch_size=batch), ctx.device)
                   for b in batches]
        latencies.extend(1000 * s for s in seconds)
        return sum(seconds)

    plan = RepeatPlan.from_timing(ctx.settings.timing)
    seconds = repeat(one_repeat, plan, lambda n, s: emit(
        "repeat", count=n, value=f"{count / s:,.0f} texts/s"))
    raw = [len(ids) for ids in ctx.model.tokenizer(texts)["input_ids"]]
    limit = ctx.info.max_seq_length
    throughput = summarize([count / s for s in seconds])
    kept = [min(n, limit) for n in raw]
    return LengthPoint(
        target_chars=length, mean_chars=float(np.mean([len(t) for t in texts])),
        texts_per_repeat=count, tokens_per_text_mean=float(np.mean(kept)),
        raw_tokens_per_text_mean=float(np.mean(raw)),
        truncated_share=sum(n > limit for n in raw) / len(raw),
        throughput_texts_per_s=throughput,
        tokens_per_s=float(np.mean(kept)) * throughput.median,
        batch_latency_ms=summarize(latencies[plan.warmup * len(batches):]))


def truncation_chars(points: list[LengthPoint], max_seq_length: int) -> float | None:
    """Estimate the text length (characters) at which the model starts cutting input."""
    untruncated = [p for p in points if p.truncated_share == 0 and p.raw_tokens_per_text_mean]
    if not untruncated or not max_seq_length:
        return None
    chars_per_token = (sum(p.mean_chars for p in untruncated)
                       / sum(p.raw_tokens_per_text_mean for p in untruncated))
    return chars_per_token * max_seq_length
