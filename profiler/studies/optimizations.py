"""Optimization experiments: each configuration's speed, memory, efficiency and quality cost.

Every variant (profiler/variants.py) encodes the same workload at the batch-size study's
recommended size; its embeddings of the corpus are compared with the fp32 baseline's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from profiler.analysis.quality import measure_quality
from profiler.measure.flops import batch_flops, model_config
from profiler.measure.memory import PeakRss
from profiler.measure.peak import Peak, cpu_flags, measure_peak, peak_dtypes
from profiler.measure.stats import Stats, speedup_interval, summarize
from profiler.measure.timing import RepeatPlan, repeat, synchronize
from profiler.storage import read_json
from profiler.studies.base import Study, StudyContext, emit
from profiler.studies.batch_size import Workload
from profiler.variants import Encode, Skip, Variant, baseline, variants


@dataclass(frozen=True)
class Experiment:
    """One variant's measurements, or why it was not measured."""

    name: str
    title: str
    family: str
    effort: str
    snippet: str
    status: str  # measured | skipped | failed
    reason: str | None = None
    throughput_texts_per_s: Stats | None = None
    speedup: float | None = None
    speedup_ci95: tuple[float, float] | None = None
    quality: dict[str, Any] | None = None
    peak_rss_increase_mb: float | None = None
    setup_s: float | None = None
    gflops_per_s: float | None = None
    peak_dtype: str | None = None
    peak_pct: float | None = None


@dataclass
class Bench:
    """What every variant runs: the timed batches, the quality texts and the references."""

    batch_size: int
    batches: list[list[str]]
    longest: list[int]  # each batch's longest text in tokens, before truncation
    quality_texts: list[str]
    plan: RepeatPlan
    peaks: dict[str, float]
    reference: np.ndarray | None = None
    base_samples: list[float] | None = None

    @property
    def texts(self) -> int:
        """Texts per timed repeat."""
        return sum(len(b) for b in self.batches)


class OptimizationsStudy(Study):
    """fp32 baseline against bf16, int8, ONNX, threads, shorter inputs and torch.compile."""

    NAME = "optimizations"
    TITLE = "Optimizations"

    def run(self, ctx: StudyContext) -> dict[str, Any]:
        """Measure the machine's peak, then every selected variant, baseline first."""
        peaks = measure_peaks(ctx)
        batch_study = earlier_batch_study(ctx)
        size = batch_study["recommended_batch_size"] if batch_study else \
            ctx.settings.length_batch_size
        bench = make_bench(ctx, size, {p.dtype: p.best_gflops for p in peaks})
        chosen = selected_variants(ctx)
        results: list[Experiment] = []
        for index, variant in enumerate(chosen):
            emit("config", label=variant.title, index=index, total=len(chosen))
            if results and results[0].status != "measured":  # nothing to compare with
                results.append(Experiment(**_base(variant), status="skipped",
                                          reason="the fp32 baseline could not be measured"))
            else:
                results.append(run_variant(ctx, variant, bench))
            emit("done", label=variant.title, summary=_summary(results[-1], bench))
        drift = remeasure_baseline(ctx, bench) if results[0].status == "measured" else None
        results = [with_speedup(r, bench) for r in results]
        return {"batch_size": bench.batch_size, "baseline_drift": drift,
                "texts_per_repeat": bench.texts,
                "quality_texts": len(bench.quality_texts), "baseline": "fp32",
                "quality_threshold": ctx.settings.quality_threshold,
                "peaks": [p.to_dict() for p in peaks], "cpu_flags": cpu_flags(),
                "experiments": [asdict(r) for r in results],
                "batch_efficiency": batch_efficiency(ctx, batch_study, bench.peaks)}

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, Any]:
        """The best configuration that keeps quality, and how many experiments ran."""
        from profiler.analysis.recommendations import best_configuration

        return {"best": best_configuration(result),
                "measured": sum(e["status"] == "measured" for e in result["experiments"]),
                "skipped": sum(e["status"] != "measured" for e in result["experiments"])}


def _summary(experiment: Experiment, bench: Bench) -> str:
    if experiment.throughput_texts_per_s is None or not bench.base_samples:
        return experiment.status
    return f"{experiment.throughput_texts_per_s.median / np.median(bench.base_samples):.2f}x"


def measure_peaks(ctx: StudyContext) -> list[Peak]:
    """The matmul peak for each dtype the device offers (shorter under --quick)."""
    emit("config", label="matmul peak", index=0, total=1)
    quick = ctx.settings.quick
    found = [measure_peak(ctx.device, dtype, size=1024, min_time_s=0.25 if quick else 0.5,
                          repeats=3 if quick else 5) for dtype in peak_dtypes(ctx.device)]
    return [p for p in found if p is not None]


def earlier_batch_study(ctx: StudyContext) -> dict[str, Any] | None:
    """This run's batch-size result, when that study ran before this one.

    A quick build runs every study in one process, so that result is still a partial file.
    """
    for name in ("batch_size.json", "batch_size.partial.json"):
        path = ctx.run_dir / name if ctx.run_dir else None
        if path and path.is_file():
            return dict(read_json(path)["result"])
    return None


def make_bench(ctx: StudyContext, batch_size: int, peaks: dict[str, float]) -> Bench:
    """Take the batch-size study's workload at this size, and the quality texts."""
    timing = ctx.settings.timing
    batches = Workload(ctx, batch_size).batches
    plan = RepeatPlan(warmup=1, min_time_s=timing.min_time_s / 2,
                      min_repeats=max(2, timing.min_repeats - 2), max_repeats=timing.max_repeats)
    return Bench(batch_size, batches, longest_tokens(ctx, batches),
                 ctx.texts[:timing.quality_texts], plan, peaks)


def selected_variants(ctx: StudyContext) -> list[Variant]:
    """The variants the settings ask for; the baseline always comes first."""
    import torch

    wanted = set(ctx.settings.experiments)
    return [v for v in variants(torch.get_num_threads())
            if v.name == "fp32" or not wanted or v.family in wanted]


def run_variant(ctx: StudyContext, variant: Variant, bench: Bench) -> Experiment:
    """Build the variant, time it, embed the quality texts; record a skip or failure instead."""
    base = _base(variant)
    if ctx.settings.quick and not variant.quick:
        return Experiment(**base, status="skipped", reason="not run under --quick")
    started = time.perf_counter()
    try:
        with variant.build(ctx) as encode:
            setup_s = time.perf_counter() - started
            seconds, memory = time_variant(ctx, encode, bench)
            embeddings = encode(bench.quality_texts, bench.batch_size)
    except Skip as skip:
        return Experiment(**base, status="skipped", reason=str(skip))
    except Exception as exc:  # a user's model may not export or compile: report, go on
        return Experiment(**base, status="failed", reason=_first_line(exc))
    return measured(ctx, variant, bench, seconds, memory, setup_s, embeddings)


def remeasure_baseline(ctx: StudyContext, bench: Bench) -> float:
    """Time fp32 again after every variant; pool both runs so drift widens every interval.

    Returns the end run's median over the first run's: how far the machine drifted.
    """
    emit("config", label="fp32 baseline, again", index=0, total=1)
    with baseline(ctx) as encode:
        seconds, _ = time_variant(ctx, encode, bench)
        with ctx.profiling.on():  # Scalene's view of the baseline: one more repeat
            for batch in bench.batches:
                encode(batch, bench.batch_size)
    assert bench.base_samples is not None
    again = [bench.texts / s for s in seconds]
    drift = float(np.median(again) / np.median(bench.base_samples))
    bench.base_samples = [*bench.base_samples, *again]
    emit("done", label="fp32 baseline, again", summary=f"drift {drift:.2f}x")
    return drift


def with_speedup(experiment: Experiment, bench: Bench) -> Experiment:
    """Fill in speedup and its interval against the pooled baseline samples."""
    if experiment.throughput_texts_per_s is None or bench.base_samples is None:
        return experiment
    samples = experiment.throughput_texts_per_s.samples
    return replace(experiment,
                   speedup=experiment.throughput_texts_per_s.median
                   / float(np.median(bench.base_samples)),
                   speedup_ci95=speedup_interval(bench.base_samples, samples))


def time_variant(ctx: StudyContext, encode: Encode, bench: Bench) -> tuple[list[float], float]:
    """Time whole repeats of the workload, batch by batch; return seconds and peak increase."""
    def one_repeat() -> float:
        start = time.perf_counter()
        for batch in bench.batches:
            encode(batch, bench.batch_size)
        synchronize(ctx.device)
        return time.perf_counter() - start

    with PeakRss() as memory:
        seconds = repeat(one_repeat, bench.plan, lambda n, s: emit(
            "repeat", count=n, value=f"{bench.texts / s:,.0f} texts/s"))
    return seconds, memory.increase_mb


def measured(ctx: StudyContext, variant: Variant, bench: Bench, seconds: list[float],
             memory_mb: float, setup_s: float, embeddings: np.ndarray) -> Experiment:
    """Turn a variant's timings and embeddings into its Experiment row."""
    throughput = [bench.texts / s for s in seconds]
    if bench.reference is None:  # the baseline runs first and is everyone's reference
        bench.reference, bench.base_samples = embeddings, throughput
    stats = summarize(throughput)
    flops = padded_flops(ctx, bench.batches, bench.longest, variant.max_seq_length)
    gflops = flops * stats.median / bench.texts / 1e9
    peak = bench.peaks.get(variant.peak_dtype)  # no int8 matmul peak is measured: no share
    return Experiment(
        **_base(variant), status="measured", throughput_texts_per_s=stats,
        quality=measure_quality(bench.reference, embeddings).to_dict(),
        peak_rss_increase_mb=memory_mb, setup_s=setup_s, gflops_per_s=gflops,
        peak_dtype=variant.peak_dtype, peak_pct=100 * gflops / peak if peak else None)


def longest_tokens(ctx: StudyContext, batches: list[list[str]]) -> list[int]:
    """Each batch's longest text in tokens: the length the batch is padded to."""
    tokenizer = ctx.model.tokenizer
    return [max(len(ids) for ids in tokenizer(batch)["input_ids"]) for batch in batches]


def padded_flops(ctx: StudyContext, batches: list[list[str]], longest: list[int],
                 max_seq_length: int | None) -> float:
    """FLOPs the transformer spends on these batches, padding included, after truncation."""
    limit = max_seq_length or ctx.info.max_seq_length
    config = model_config(ctx.model)
    return sum(batch_flops(config, len(batch), min(tokens, limit))
               for batch, tokens in zip(batches, longest, strict=True))


def flops_of(ctx: StudyContext, batches: list[list[str]], max_seq_length: int | None) -> float:
    """FLOPs the transformer spends on these batches, padding included."""
    return padded_flops(ctx, batches, longest_tokens(ctx, batches), max_seq_length)


def batch_efficiency(ctx: StudyContext, batch_study: dict[str, Any] | None,
                     peaks: dict[str, float]) -> list[dict[str, Any]]:
    """Achieved GFLOP/s and % of the fp32 peak for each point of this run's batch-size study."""
    if batch_study is None or "float32" not in peaks:
        return []
    rows = []
    for point in batch_study["points"]:
        work = Workload(ctx, point["batch_size"])
        gflops = (flops_of(ctx, work.batches, None) * point["throughput_texts_per_s"]["median"]
                  / work.texts / 1e9)
        rows.append({"batch_size": point["batch_size"], "gflops_per_s": gflops,
                     "peak_pct": 100 * gflops / peaks["float32"]})
    return rows


def _base(variant: Variant) -> dict[str, Any]:
    return {"name": variant.name, "title": variant.title, "family": variant.family,
            "effort": variant.effort, "snippet": variant.snippet}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


