"""Optimization experiments: each configuration on the chosen workload at its own best batch size.

Every variant (profiler/variants.py) first searches the batch sizes on a sample of the request,
then runs the whole request at the fastest size it found, like a person looping over batch
sizes and dtypes would. Its embeddings of the corpus are compared with the fp32 baseline's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from profiler.analysis.quality import measure_quality
from profiler.measure.flops import model_config
from profiler.measure.memory import PeakRss
from profiler.measure.peak import Peak, cpu_flags, measure_peak, peak_dtypes
from profiler.measure.stats import Stats, speedup_interval, summarize
from profiler.measure.validity import MAX_CV, MIN_SAMPLES, Validity, check
from profiler.studies.base import Study, StudyContext, emit
from profiler.studies.batch_size import DEFAULT_BATCH_SIZE, QUERY_CHUNK, measured_sizes
from profiler.variants import Encode, Skip, Variant, baseline, variants
from profiler.workloads import (
    Schedule,
    padding_of,
    run_schedule,
    run_workload,
    schedule_for,
    spread,
    token_counts,
)

PRUNE_BELOW = 0.5  # a variant under half the baseline's speed on the search sample is not timed


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
    workload: str | None = None
    batch_size: int | None = None
    search_texts_per_s: dict[str, float] | None = None  # batch size -> texts/s on the sample
    graph: str | None = None
    threads: int | None = None
    throughput_texts_per_s: Stats | None = None
    latency_ms_p95: float | None = None
    speedup: float | None = None
    speedup_ci95: tuple[float, float] | None = None
    quality: dict[str, Any] | None = None
    peak_rss_increase_mb: float | None = None
    setup_s: float | None = None
    gflops_per_s: float | None = None
    useful_gflops_per_s: float | None = None
    peak_dtype: str | None = None
    peak_pct: float | None = None
    useful_peak_pct: float | None = None
    validity: Validity | None = None  # of the throughput samples: too noisy or too few?


@dataclass
class Bench:
    """What every variant runs: the workload's texts, the search sample, the quality texts."""

    workload: str
    texts: list[str]
    tokens: list[int]
    sizes: list[int]
    search_texts: int
    quality_texts: list[str]
    repeats: int
    peaks: dict[str, float]
    config: dict[str, int]
    reference: np.ndarray | None = None
    base_samples: list[float] | None = None
    base_size: int | None = None
    base_search: dict[int, float] | None = None  # the baseline's texts/s per searched size
    max_cv: float = MAX_CV  # samples spread wider than this are too noisy to claim on
    min_samples: int = MIN_SAMPLES


class OptimizationsStudy(Study):
    """fp32 against bf16, int8, ONNX Runtime, OpenVINO, threads, shorter inputs, compile."""

    NAME = "optimizations"
    TITLE = "Optimizations"

    def run(self, ctx: StudyContext) -> dict[str, Any]:
        """Measure the machine's peak, then every selected variant, baseline first."""
        peaks = measure_peaks(ctx)
        bench = make_bench(ctx, {p.dtype: p.best_gflops for p in peaks})
        results: list[Experiment] = []
        chosen = selected_variants(ctx)
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
        return {"workload": bench.workload, "texts": len(bench.texts),
                "batch_sizes": bench.sizes, "search_texts": bench.search_texts,
                "default_batch_size": DEFAULT_BATCH_SIZE, "baseline_drift": drift,
                "quality_texts": len(bench.quality_texts), "baseline": "fp32",
                "quality_threshold": ctx.settings.quality_threshold,
                "peaks": [p.to_dict() for p in peaks], "cpu_flags": cpu_flags(),
                "experiments": [asdict(r) for r in results]}

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, Any]:
        """The best combination that keeps quality, and how many experiments ran."""
        from profiler.analysis.recommendations import best_configuration

        return {"workload": result["workload"], "best": best_configuration(result),
                "measured": sum(e["status"] == "measured" for e in result["experiments"]),
                "skipped": sum(e["status"] != "measured" for e in result["experiments"])}


def _summary(experiment: Experiment, bench: Bench) -> str:
    if experiment.throughput_texts_per_s is None or not bench.base_samples:
        return experiment.status
    ratio = experiment.throughput_texts_per_s.median / np.median(bench.base_samples)
    return f"{ratio:.2f}x at batch {experiment.batch_size}"


def measure_peaks(ctx: StudyContext) -> list[Peak]:
    """The matmul peak for each dtype the device offers (shorter under --quick)."""
    emit("config", label="matmul peak", index=0, total=1)
    quick = ctx.settings.quick
    found = [measure_peak(ctx.device, dtype, size=1024, min_time_s=0.2 if quick else 0.5,
                          repeats=2 if quick else 5) for dtype in peak_dtypes(ctx.device)]
    return [p for p in found if p is not None]


def make_bench(ctx: StudyContext, peaks: dict[str, float]) -> Bench:
    """The chosen workload over the request (query: spread-out single texts)."""
    timing, workload = ctx.settings.timing, ctx.settings.workload
    texts = spread(ctx.request, timing.query_texts) if workload == "query" else ctx.request
    sizes = ([1] if workload == "query"
             else measured_sizes(ctx.settings.batch_sizes, ctx.settings.quick))
    return Bench(workload, texts, token_counts(ctx.model, texts, ctx.info.max_seq_length),
                 sizes, timing.search_texts, ctx.texts[:timing.quality_texts],
                 timing.workload_repeats, peaks, model_config(ctx.model),
                 max_cv=ctx.settings.max_cv, min_samples=ctx.settings.min_samples)


def variants_of(ctx: StudyContext) -> list[Variant]:
    """Every variant for this device and workload."""
    import torch

    return variants(torch.get_num_threads(), ctx.settings.workload)


def selected_variants(ctx: StudyContext) -> list[Variant]:
    """The variants the settings ask for; the baseline always comes first."""
    wanted = set(ctx.settings.experiments)
    return [v for v in variants_of(ctx) if v.family == "fp32" or not wanted
            or v.family in wanted]


def run_variant(ctx: StudyContext, variant: Variant, bench: Bench) -> Experiment:
    """Build the variant, search its batch size, time it, embed the quality texts."""
    base = _base(variant)
    if ctx.settings.quick and not variant.quick:
        return Experiment(**base, status="skipped", reason="not run under --quick")
    if (reason := nothing_to_cut(variant, bench) or same_as_baseline(variant, bench)):
        return Experiment(**base, status="skipped", reason=reason)
    started = time.perf_counter()
    try:
        with variant.build(ctx) as encode:
            setup_s = time.perf_counter() - started
            search = search_batch_size(ctx, encode, bench, variant.batch_size)
            size = max(search, key=lambda s: search[s])
            if (reason := too_slow(variant, bench, search)) is not None:
                return Experiment(**base, status="skipped", reason=reason, workload=bench.workload,
                                  batch_size=size, search_texts_per_s=_keys(search))
            seconds, memory = time_variant(ctx, encode, bench, size)
            embeddings = encode(bench.quality_texts, size if size > 1 else DEFAULT_BATCH_SIZE)
            threads = int(getattr(encode, "threads", None) or _torch_threads())
            graph = str(getattr(encode, "graph", None) or variant.graph)
            variant = replace(variant, peak_dtype=getattr(encode, "peak_dtype", variant.peak_dtype))
    except Skip as skip:
        return Experiment(**base, status="skipped", reason=str(skip))
    except Exception as exc:  # a user's model may not export or compile: report, go on
        return Experiment(**base, status="failed", reason=_first_line(exc))
    return measured(variant, bench, size, search, seconds, memory, setup_s, embeddings,
                    threads, graph)


def nothing_to_cut(variant: Variant, bench: Bench) -> str | None:
    """A max_seq_length variant is pointless when no text of the workload is that long."""
    if variant.max_seq_length is None:
        return None
    longer = sum(count > variant.max_seq_length for count in bench.tokens)
    if longer:
        return None
    return (f"no text of the workload has more than {variant.max_seq_length} tokens "
            f"(longest: {max(bench.tokens)}), so there is nothing to cut")


def same_as_baseline(variant: Variant, bench: Bench) -> str | None:
    """The plain-call row is the baseline itself when the baseline's best size is the default."""
    if variant.name == "fp32_default" and bench.base_size == variant.batch_size:
        return f"the fp32 baseline's fastest batch size is already {variant.batch_size}"
    return None


def too_slow(variant: Variant, bench: Bench, search: dict[int, float]) -> str | None:
    """Spare whole passes to a variant far slower than the baseline on the same sample."""
    if variant.name == "fp32":
        bench.base_search = dict(search)
    if variant.family == "fp32" or bench.base_search is None:
        return None  # the baseline and the plain call are references: always timed
    ratio = max(search.values()) / max(bench.base_search.values())
    if ratio >= PRUNE_BELOW and len(search) == len(bench.base_search):
        return None
    return (f"{ratio:.2f}× the fp32 baseline's best throughput on the batch-size search sample "
            f"(searched {', '.join(map(str, search))}): far slower, so not timed on the whole "
            "request")


def _keys(search: dict[int, float]) -> dict[str, float]:
    return {str(k): v for k, v in search.items()}


def search_batch_size(ctx: StudyContext, encode: Encode, bench: Bench,
                      fixed: int | None) -> dict[int, float]:
    """Texts/s at each batch size on evenly spaced batches of the workload's own schedule."""
    sizes = [fixed] if fixed else bench.sizes
    encode(bench.texts[:sizes[0]], sizes[0])  # warm-up: first-call costs
    found: dict[int, float] = {}
    for size in sizes:
        schedule = schedule_for(bench.workload, bench.texts, size)
        sample = sample_batches(schedule, bench.search_texts)
        seconds = sum(run_schedule(encode, bench.texts, sample, ctx.device))
        # the sample's batches may be shorter or longer than the schedule's on average: scale
        # its time by padded tokens (what a batch costs) to the whole schedule
        scale = padded_tokens(schedule, bench.tokens) / padded_tokens(sample, bench.tokens)
        found[size] = len(bench.texts) / (seconds * scale)
        emit("repeat", count=size, value=f"batch {size}: {found[size]:,.0f} texts/s (sample)")
        base = (bench.base_search or {}).get(size)
        if not fixed and len(found) == 1 and base and found[size] < PRUNE_BELOW / 2 * base:
            break  # far slower than the baseline at its first size: the rest will not catch up
    return found


def padded_tokens(schedule: Schedule, tokens: list[int]) -> int:
    """Tokens a schedule computes: each batch's size times its longest text."""
    return sum(len(batch) * max(tokens[i] for i in batch) for batch in schedule)


def sample_batches(schedule: Schedule, texts: int) -> Schedule:
    """Evenly spaced batches of a schedule holding about `texts` texts (at least one batch)."""
    per_batch = max(1, len(schedule[0]))
    count = min(len(schedule), max(1, round(texts / per_batch)))
    step = len(schedule) / count
    return [schedule[int((i + 0.5) * step)] for i in range(count)]


def time_variant(ctx: StudyContext, encode: Encode, bench: Bench,
                 size: int) -> tuple[list[list[float]], float]:
    """Time whole passes of the workload at `size`; return each pass's call seconds and RSS."""
    passes = []
    with PeakRss() as memory:
        for n in range(bench.repeats):
            passes.append(run_workload(bench.workload, encode, bench.texts, size, ctx.device))
            emit("repeat", count=n + 1,
                 value=f"{len(bench.texts) / sum(passes[-1]):,.0f} texts/s at batch {size}")
    return passes, memory.increase_mb


def throughput_samples(bench: Bench, passes: list[list[float]]) -> list[float]:
    """Texts/s per pass; a query pass is cut into chunks so one pass gives several samples."""
    if bench.workload != "query":
        return [len(bench.texts) / sum(p) for p in passes]
    calls = [s for p in passes for s in p]
    return [len(c) / sum(c) for c in (calls[i:i + QUERY_CHUNK]
                                      for i in range(0, len(calls), QUERY_CHUNK))]


def remeasure_baseline(ctx: StudyContext, bench: Bench) -> float:
    """Time fp32 again after every variant; pool both runs so drift widens every interval.

    Returns the end run's median over the first run's: how far the machine drifted.
    """
    emit("config", label="fp32 baseline, again", index=0, total=1)
    assert bench.base_samples is not None and bench.base_size is not None
    with baseline(ctx) as encode:
        passes, _ = time_variant(ctx, encode, bench, bench.base_size)
        with ctx.profiling.on():  # Scalene's view of the baseline: one more pass
            run_workload(bench.workload, encode, bench.texts, bench.base_size, ctx.device)
    again = throughput_samples(bench, passes)
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


def measured(variant: Variant, bench: Bench, size: int, search: dict[int, float],
             passes: list[list[float]], memory_mb: float, setup_s: float,
             embeddings: np.ndarray, threads: int, graph: str) -> Experiment:
    """Turn a variant's timings and embeddings into its Experiment row."""
    if bench.reference is None:  # the baseline runs first and is everyone's reference
        bench.reference = embeddings
    samples = throughput_samples(bench, passes)
    if variant.name == "fp32":
        bench.base_samples, bench.base_size = samples, size
    stats = summarize(samples)
    limit = variant.max_seq_length or max(bench.tokens)
    tokens = [min(count, limit) for count in bench.tokens]
    padding = padding_of(schedule_for(bench.workload, bench.texts, size), tokens, bench.config)
    per_s = stats.median / len(bench.texts) / 1e9
    gflops, useful = padding.flops_executed * per_s, padding.flops_useful * per_s
    peak = bench.peaks.get(variant.peak_dtype)  # no int8 matmul peak is measured: no share
    return Experiment(
        **_base(variant), status="measured", workload=bench.workload, batch_size=size,
        search_texts_per_s=_keys(search), graph=graph,
        threads=threads, throughput_texts_per_s=stats,
        latency_ms_p95=float(np.percentile([1000 * s for p in passes for s in p], 95)),
        quality=measure_quality(bench.reference, embeddings).to_dict(),
        peak_rss_increase_mb=memory_mb, setup_s=setup_s, gflops_per_s=gflops,
        useful_gflops_per_s=useful, peak_dtype=variant.peak_dtype,
        peak_pct=100 * gflops / peak if peak else None,
        useful_peak_pct=100 * useful / peak if peak else None,
        validity=check(samples, bench.max_cv, bench.min_samples))


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _base(variant: Variant) -> dict[str, Any]:
    return {"name": variant.name, "title": variant.title, "family": variant.family,
            "effort": variant.effort, "snippet": variant.snippet}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
