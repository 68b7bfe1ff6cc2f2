"""Batch-size study: throughput, latency and memory for each batch size."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from profiler.measure.memory import PeakRss, cuda_peaks_mb, cuda_reset_peak
from profiler.measure.stats import Stats, summarize
from profiler.measure.timing import RepeatPlan, repeat, timed
from profiler.studies.base import Study, StudyContext, emit, measure_each


@dataclass(frozen=True)
class BatchPoint:
    """Measurements at one batch size."""

    batch_size: int
    texts_per_repeat: int
    forward_passes_per_repeat: int
    tokens_per_repeat: int
    throughput_texts_per_s: Stats
    batch_latency_ms: Stats
    latency_per_text_ms: float
    tokens_per_s: float
    peak_rss_increase_mb: float
    cuda_memory_mb: dict[str, float] | None


@dataclass(frozen=True)
class Overhead:
    """Scalene's cost on one configuration: one repeat with profiling off, one on, alternated."""

    batch_size: int
    rounds: int
    off_texts_per_s: Stats
    on_texts_per_s: Stats
    overhead_pct: float


class Workload:
    """A fixed list of texts cut into batches; one call encodes them all, batch by batch."""

    def __init__(self, ctx: StudyContext, batch_size: int) -> None:
        count = math.ceil(max(ctx.settings.timing.texts_per_repeat, batch_size) / batch_size)
        texts = ctx.cycled(count * batch_size)
        self.ctx, self.batch_size = ctx, batch_size
        self.batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
        self.texts = len(texts)
        self.latencies_ms: list[float] = []

    def run(self) -> float:
        """Encode every batch; record each batch's latency; return the total seconds."""
        seconds = [timed(functools.partial(self._encode, batch), self.ctx.device)
                   for batch in self.batches]
        self.latencies_ms.extend(s * 1000 for s in seconds)
        return sum(seconds)

    def tokens(self) -> int:
        """Count the tokens the model sees (after truncation) in one repeat."""
        tokenizer, limit = self.ctx.model.tokenizer, self.ctx.info.max_seq_length
        return sum(min(len(ids), limit) for batch in self.batches
                   for ids in tokenizer(batch)["input_ids"])

    def _encode(self, batch: list[str]) -> object:
        return self.ctx.model.encode(batch, batch_size=self.batch_size, show_progress_bar=False,
                                     convert_to_numpy=True)


class BatchSizeStudy(Study):
    """Throughput, latency and memory at each batch size."""

    NAME = "batch_size"
    TITLE = "Batch size"

    def run(self, ctx: StudyContext) -> dict[str, Any]:
        """Measure every batch size, then Scalene's overhead at the recommended one."""
        sizes = ctx.settings.batch_sizes
        ctx.model.encode(ctx.texts[:sizes[0]], batch_size=sizes[0])  # first-call costs: no size's
        points = measure_each(sizes, "batch {}", lambda size: measure_point(ctx, size),
                              lambda p: f"{p.throughput_texts_per_s.median:,.0f} texts/s")
        fastest, recommended = pick_batch_sizes(points, ctx.settings.recommend_within)
        overhead = measure_overhead(ctx, recommended) if ctx.profiling.under_scalene else None
        return {"points": [asdict(p) for p in points], "fastest_batch_size": fastest,
                "recommended_batch_size": recommended,
                "recommend_within": ctx.settings.recommend_within,
                "scalene_overhead": asdict(overhead) if overhead else None}

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, Any]:
        """Best and recommended throughput, and the batch sizes they come from."""
        by_size = {p["batch_size"]: p for p in result["points"]}
        best = by_size[result["fastest_batch_size"]]
        chosen = by_size[result["recommended_batch_size"]]
        overhead = result.get("scalene_overhead")
        return {
            "fastest_batch_size": result["fastest_batch_size"],
            "best_throughput_texts_per_s": best["throughput_texts_per_s"]["median"],
            "recommended_batch_size": result["recommended_batch_size"],
            "recommended_throughput_texts_per_s": chosen["throughput_texts_per_s"]["median"],
            "recommended_latency_ms_p95": chosen["batch_latency_ms"]["p95"],
            "scalene_overhead_pct": overhead["overhead_pct"] if overhead else None,
        }


def measure_point(ctx: StudyContext, batch_size: int) -> BatchPoint:
    """Warm up, then repeat the workload until the timing plan is met, sampling peak RSS."""
    work = Workload(ctx, batch_size)
    plan = RepeatPlan.from_timing(ctx.settings.timing)
    cuda_reset_peak(ctx.device)
    with PeakRss() as memory:
        seconds = repeat(work.run, plan, lambda n, s: emit(
            "repeat", count=n, value=f"{work.texts / s:,.0f} texts/s"))
    work.latencies_ms = work.latencies_ms[plan.warmup * len(work.batches):]
    throughput = summarize([work.texts / s for s in seconds])
    tokens = work.tokens()
    return BatchPoint(
        batch_size=batch_size, texts_per_repeat=work.texts,
        forward_passes_per_repeat=len(work.batches), tokens_per_repeat=tokens,
        throughput_texts_per_s=throughput, batch_latency_ms=summarize(work.latencies_ms),
        latency_per_text_ms=1000.0 / throughput.median,
        tokens_per_s=tokens * throughput.median / work.texts,
        peak_rss_increase_mb=memory.increase_mb, cuda_memory_mb=cuda_peaks_mb(ctx.device))


def pick_batch_sizes(points: list[BatchPoint], within: float) -> tuple[int, int]:
    """Return the fastest batch size and the smallest within `within` of its throughput."""
    fastest = max(points, key=lambda p: p.throughput_texts_per_s.median)
    floor = fastest.throughput_texts_per_s.median * (1 - within)
    recommended = min(p.batch_size for p in points if p.throughput_texts_per_s.median >= floor)
    return fastest.batch_size, recommended


def measure_overhead(ctx: StudyContext, batch_size: int) -> Overhead:
    """Alternate repeats with Scalene off and on; the on-repeats also feed the profile."""
    work = Workload(ctx, batch_size)
    rounds = ctx.settings.timing.overhead_rounds
    off, on = [], []
    emit("config", label=f"Scalene overhead, batch {batch_size}", index=0, total=1)
    for _ in range(rounds):
        off.append(work.texts / work.run())
        with ctx.profiling.on():
            on.append(work.texts / work.run())
        emit("repeat", count=len(on), value=f"off {off[-1]:,.0f} / on {on[-1]:,.0f} texts/s")
    off_stats, on_stats = summarize(off), summarize(on)
    return Overhead(batch_size=batch_size, rounds=rounds, off_texts_per_s=off_stats,
                    on_texts_per_s=on_stats,
                    overhead_pct=(off_stats.median / on_stats.median - 1) * 100)
