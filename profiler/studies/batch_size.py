"""Batch-size study: bulk and stream at every batch size, single queries, and padding remedies.

Every pass encodes the whole request (profiler/workloads.py). Passes go round-robin over the
batch sizes and workloads, so a machine that drifts during the study slows every configuration
alike instead of the last ones measured.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import numpy as np

from profiler.measure.flops import model_config
from profiler.measure.memory import cuda_peaks_mb, cuda_reset_peak
from profiler.measure.metrics import Metric, metric
from profiler.measure.stats import Stats, speedup_interval, summarize
from profiler.measure.validity import Validity, check
from profiler.studies.base import Study, StudyContext, emit, plain_python, quick_subset
from profiler.workloads import (
    DESCRIPTIONS,
    Padding,
    Schedule,
    model_encode,
    padding_of,
    run_schedule,
    run_workload,
    schedule_for,
    spread,
    token_budget_schedule,
    token_counts,
    window_latencies_ms,
    window_sorted_schedule,
)

DEFAULT_BATCH_SIZE = 32  # sentence-transformers' encode() default: the reference for gains
BATCHED = ("bulk", "stream")
QUERY_CHUNK = 25  # queries per throughput sample
SORT_WINDOW = 8  # batches a stream waits for before sorting them by length


@dataclass(frozen=True)
class WorkloadPoint:
    """One workload at one batch size, over the whole request."""

    workload: str
    batch_size: int
    texts: int
    calls_per_pass: int
    throughput_texts_per_s: Stats
    call_latency_ms: Stats
    latency_per_text_ms: float
    tokens_per_s: float
    padding: Padding
    cuda_memory_mb: dict[str, float] | None
    validity: Validity | None = None  # of the throughput samples; None: not checked


@dataclass(frozen=True)
class Remedy:
    """A way to batch a stream with less padding, timed against the plain stream."""

    name: str
    title: str
    batch_size: int
    window_batches: int | None
    token_budget: int | None
    calls_per_pass: int
    throughput_texts_per_s: Stats
    latency_ms: Stats  # per text, from the moment its window is full (the stream: its batch)
    padding: Padding
    speedup: float | None = None
    speedup_ci95: tuple[float, float] | None = None
    added_latency_ms_p95: float | None = None
    validity: Validity | None = None  # of the throughput samples


@dataclass(frozen=True)
class Overhead:
    """Scalene's cost on one configuration: one pass with profiling off, one on, alternated."""

    workload: str
    batch_size: int
    rounds: int
    off_texts_per_s: Stats
    on_texts_per_s: Stats
    overhead_pct: float


Row = TypeVar("Row", WorkloadPoint, Remedy)


class Passes:
    """Call seconds per configuration, collected over round-robin passes."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int], list[list[float]]] = {}

    def add(self, key: tuple[str, int], seconds: list[float]) -> None:
        """Keep one pass's call seconds."""
        self.calls.setdefault(key, []).append(seconds)

    def throughput(self, key: tuple[str, int], texts: int) -> Stats:
        """Texts per second of each pass."""
        return summarize([texts / sum(p) for p in self.calls[key]])

    def latency_ms(self, key: tuple[str, int]) -> Stats:
        """Every call's milliseconds, over all passes."""
        return summarize([1000 * s for p in self.calls[key] for s in p])


class BatchSizeStudy(Study):
    """Bulk and stream throughput at each batch size; query latency; padding and its remedies."""

    NAME = "batch_size"
    TITLE = "Batch size and workloads"

    def run(self, ctx: StudyContext) -> dict[str, Any]:
        """Measure every workload, pick batch sizes, time the stream's padding remedies."""
        texts = ctx.request
        tokens = token_counts(ctx.model, texts, ctx.info.max_seq_length)
        sizes = measured_sizes(ctx.settings.batch_sizes, ctx.settings.quick)
        cold = cold_start(ctx)
        ctx.model.encode(texts[:sizes[0]], batch_size=sizes[0])  # first-call costs: no size's
        points = [checked(p, ctx) for p in measure_batched(ctx, texts, tokens, sizes)]
        chosen = {w: pick_batch_sizes([p for p in points if p.workload == w],
                                      ctx.settings.recommend_within) for w in BATCHED}
        query = measure_query(ctx, texts, tokens)
        remedies = [checked(r, ctx)
                    for r in measure_remedies(ctx, texts, tokens, chosen["stream"][1])]
        overhead = None
        if ctx.profiling.under_scalene:
            overhead = measure_overhead(ctx, chosen["bulk"][1])
        return {
            "workload": ctx.settings.workload, "descriptions": DESCRIPTIONS,
            "request": request_facts(ctx, texts, tokens), "default_batch_size": DEFAULT_BATCH_SIZE,
            "recommend_within": ctx.settings.recommend_within,
            "points": [asdict(p) for p in points],
            "choices": {w: {"fastest_batch_size": f, "recommended_batch_size": r}
                        for w, (f, r) in chosen.items()},
            "query": {**query, "cold_start": cold},
            "remedies": [asdict(r) for r in remedies],
            "scalene_overhead": asdict(overhead) if overhead else None}

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, Any]:
        """The chosen workload's best and recommended figures; every workload's best."""
        return headline_of(result)

    @staticmethod
    def metrics(result: dict[str, Any]) -> list[Metric]:
        """Each batched workload at its fastest size and at 32; query latency; cold start."""
        return metrics_of(result)


def measured_sizes(sizes: tuple[int, ...], quick: bool = False) -> list[int]:
    """The batch sizes asked for (under --quick three of them), plus the default 32, in order."""
    return sorted({*(quick_subset(sizes) if quick else sizes), DEFAULT_BATCH_SIZE})


def measure_batched(ctx: StudyContext, texts: list[str], tokens: list[int],
                    sizes: list[int]) -> list[WorkloadPoint]:
    """Round-robin passes of bulk and stream at every size over the whole request."""
    encode, passes = model_encode(ctx.model), Passes()
    repeats = ctx.settings.timing.workload_repeats
    cuda: dict[int, dict[str, float] | None] = {}
    for round_ in range(repeats):
        emit("config", label=f"bulk and stream, pass {round_ + 1} of {repeats}",
             index=round_, total=repeats)
        for size in sizes:
            cuda_reset_peak(ctx.device)
            for workload in BATCHED:
                passes.add((workload, size), run_workload(workload, encode, texts, size,
                                                          ctx.device))
            cuda[size] = cuda_peaks_mb(ctx.device)
            bulk = len(texts) / sum(passes.calls[("bulk", size)][-1])
            emit("repeat", count=size, value=f"batch {size}: bulk {bulk:,.0f} texts/s")
        emit("done", label=f"pass {round_ + 1}", summary=f"{len(sizes)} batch sizes")
    config = model_config(ctx.model)
    return [point(w, size, texts, tokens, passes, config, cuda[size])
            for w in BATCHED for size in sizes]


def point(workload: str, size: int, texts: list[str], tokens: list[int], passes: Passes,
          config: dict[str, int], cuda: dict[str, float] | None) -> WorkloadPoint:
    """Summarize one workload at one size."""
    schedule = schedule_for(workload, texts, size)
    throughput = passes.throughput((workload, size), len(texts))
    return WorkloadPoint(
        workload=workload, batch_size=size, texts=len(texts),
        calls_per_pass=1 if workload == "bulk" else len(schedule),
        throughput_texts_per_s=throughput, call_latency_ms=passes.latency_ms((workload, size)),
        latency_per_text_ms=1000.0 / throughput.median,
        tokens_per_s=sum(tokens) * throughput.median / len(texts),
        padding=padding_of(schedule, tokens, config), cuda_memory_mb=cuda)


def checked(row: Row, ctx: StudyContext) -> Row:
    """The point or remedy with its throughput samples checked for noise and count."""
    return replace(row, validity=check(row.throughput_texts_per_s.samples, ctx.settings.max_cv,
                                       ctx.settings.min_samples))


def pick_batch_sizes(points: list[WorkloadPoint], within: float) -> tuple[int, int]:
    """Return the fastest batch size and the smallest within `within` of its throughput.

    Sizes whose samples are too noisy or too few are passed over while any other is valid.
    """
    points = [p for p in points if p.validity is None or p.validity.valid] or points
    fastest = max(points, key=lambda p: p.throughput_texts_per_s.median)
    floor = fastest.throughput_texts_per_s.median * (1 - within)
    recommended = min(p.batch_size for p in points if p.throughput_texts_per_s.median >= floor)
    return fastest.batch_size, recommended


def measure_query(ctx: StudyContext, texts: list[str], tokens: list[int]) -> dict[str, Any]:
    """One text per call over spread-out texts of the request: latency of every call."""
    queries = spread(texts, ctx.settings.timing.query_texts)
    emit("config", label=f"query: {len(queries)} single-text calls", index=0, total=1)
    encode = model_encode(ctx.model)
    seconds = run_workload("query", encode, queries, 1, ctx.device)
    chunks = [seconds[i:i + QUERY_CHUNK] for i in range(0, len(seconds), QUERY_CHUNK)]
    latency = summarize([1000 * s for s in seconds])
    throughput = [len(c) / sum(c) for c in chunks]
    emit("done", label="query", summary=f"p95 {latency.p95:,.1f} ms")
    return {"queries": len(queries), "latency_ms": asdict(latency),
            "throughput_texts_per_s": asdict(summarize(throughput)),
            "validity": check(throughput, ctx.settings.max_cv, ctx.settings.min_samples).to_dict(),
            "mean_tokens": float(np.mean(token_counts(ctx.model, queries,
                                                      ctx.info.max_seq_length)))}


def cold_start(ctx: StudyContext) -> dict[str, Any] | None:
    """Time a fresh process's imports, model load and first two single-text calls."""
    emit("config", label="cold start (fresh process)", index=0, total=1)
    request = {"model_path": ctx.info.path, "device": ctx.device, "text": ctx.request[0],
               "trust_remote_code": ctx.settings.trust_remote_code}
    done = subprocess.run([plain_python(), "-m", "profiler.cold_start"],
                          input=json.dumps(request), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        emit("done", label="cold start", summary="failed")
        return None
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    emit("done", label="cold start", summary=f"load {found['load_s']:.1f} s")
    return found


def remedy_schedules(texts: list[str], tokens: list[int], size: int,
                     budget: int) -> dict[str, tuple[str, Schedule, int | None]]:
    """The stream at `size` and each way of cutting its padding, as schedules."""
    return {
        "stream": (f"stream, batches of {size} in arrival order",
                   schedule_for("stream", texts, size), None),
        f"sort_window_{SORT_WINDOW}": (
            f"sort each window of {SORT_WINDOW} batches by length",
            window_sorted_schedule(texts, size, SORT_WINDOW), SORT_WINDOW),
        "token_budget": (f"token budget: up to {budget:,} padded tokens per batch",
                         token_budget_schedule(tokens, budget), None),
    }


def default_budget(tokens: list[int], size: int, budget: int | None) -> int:
    """The token budget: as set, else `size` texts of the mean length (never below the longest)."""
    if budget is not None:
        return budget
    return max(round(size * float(np.mean(tokens))), max(tokens))


def measure_remedies(ctx: StudyContext, texts: list[str], tokens: list[int],
                     size: int) -> list[Remedy]:
    """Time the stream and its padding remedies round-robin; speedups against the stream."""
    budget = default_budget(tokens, size, ctx.settings.token_budget)
    plans = remedy_schedules(texts, tokens, size, budget)
    if ctx.settings.quick and ctx.settings.token_budget is None:  # one remedy is enough to check
        plans.pop("token_budget")
    encode, repeats = model_encode(ctx.model), ctx.settings.timing.workload_repeats
    seconds: dict[str, list[list[float]]] = {name: [] for name in plans}
    emit("config", label=f"padding remedies at batch {size}", index=0, total=1)
    for round_ in range(repeats):
        for name, (_, schedule, _) in plans.items():
            seconds[name].append(run_schedule(encode, texts, schedule, ctx.device))
        emit("repeat", count=round_ + 1, value=f"{len(plans)} schedules")
    config = model_config(ctx.model)
    rows = [remedy(name, title, schedule, window, seconds[name], len(texts), size,
                   budget if name == "token_budget" else None, tokens, config)
            for name, (title, schedule, window) in plans.items()]
    emit("done", label="padding remedies", summary=f"{len(rows) - 1} remedies")
    return [against_stream(r, rows[0]) for r in rows]


def remedy(name: str, title: str, schedule: Schedule, window: int | None,
           passes: list[list[float]], texts: int, size: int, budget: int | None,
           tokens: list[int], config: dict[str, int]) -> Remedy:
    """Summarize one remedy's passes."""
    latencies = [ms for p in passes for ms in window_latencies_ms(p, schedule, window or 1)]
    return Remedy(name=name, title=title, batch_size=size, window_batches=window,
                  token_budget=budget, calls_per_pass=len(schedule),
                  throughput_texts_per_s=summarize([texts / sum(p) for p in passes]),
                  latency_ms=summarize(latencies), padding=padding_of(schedule, tokens, config))


def against_stream(row: Remedy, stream: Remedy) -> Remedy:
    """Fill in the speedup over the plain stream and the p95 latency it adds."""
    base, new = stream.throughput_texts_per_s, row.throughput_texts_per_s
    return replace(row, speedup=new.median / base.median,
                   speedup_ci95=speedup_interval(base.samples, new.samples),
                   added_latency_ms_p95=row.latency_ms.p95 - stream.latency_ms.p95)


def measure_overhead(ctx: StudyContext, batch_size: int) -> Overhead:
    """Alternate bulk passes with Scalene off and on; the on-passes also feed the profile."""
    texts = spread(ctx.request, ctx.settings.timing.texts_per_repeat)
    encode, rounds = model_encode(ctx.model), ctx.settings.timing.overhead_rounds
    off, on = [], []
    emit("config", label=f"Scalene overhead, bulk at batch {batch_size}", index=0, total=1)
    for _ in range(rounds):
        off.append(len(texts) / sum(run_workload("bulk", encode, texts, batch_size, ctx.device)))
        with ctx.profiling.on():
            on.append(len(texts) / sum(run_workload("bulk", encode, texts, batch_size,
                                                    ctx.device)))
        emit("repeat", count=len(on), value=f"off {off[-1]:,.0f} / on {on[-1]:,.0f} texts/s")
    off_stats, on_stats = summarize(off), summarize(on)
    return Overhead(workload="bulk", batch_size=batch_size, rounds=rounds,
                    off_texts_per_s=off_stats, on_texts_per_s=on_stats,
                    overhead_pct=(off_stats.median / on_stats.median - 1) * 100)


def request_facts(ctx: StudyContext, texts: list[str], tokens: list[int]) -> dict[str, Any]:
    """What one request holds: how many texts, from how many corpus texts, how long."""
    counts = np.asarray(tokens)
    return {"texts": len(texts), "corpus_texts": len(ctx.texts),
            "cycled": len(texts) > len(ctx.texts), "asked": ctx.settings.request_size,
            "max_seq_length": ctx.info.max_seq_length,
            "tokens_mean": float(counts.mean()), "tokens_p50": float(np.median(counts)),
            "tokens_p95": float(np.percentile(counts, 95)), "tokens_max": int(counts.max()),
            "at_limit_share": float(np.mean(counts >= ctx.info.max_seq_length))}


def headline_of(result: dict[str, Any]) -> dict[str, Any]:
    """Pick the chosen workload's figures (query: latency per call) for summary.json."""
    workload = result["workload"]
    by_key = {(p["workload"], p["batch_size"]): p for p in result["points"]}
    best = {w: by_key[(w, c["fastest_batch_size"])]["throughput_texts_per_s"]["median"]
            for w, c in result["choices"].items()}
    query = result["query"]
    overhead = result.get("scalene_overhead")
    figures: dict[str, Any] = {
        "workload": workload, "request_texts": result["request"]["texts"],
        "bulk_best_texts_per_s": best["bulk"], "stream_best_texts_per_s": best["stream"],
        "query_latency_ms_p50": query["latency_ms"]["p50"],
        "query_latency_ms_p95": query["latency_ms"]["p95"],
        "query_latency_ms_p99": query["latency_ms"]["p99"],
        "query_latency_ms_max": query["latency_ms"]["max"],
        "cold_start_s": (query["cold_start"] or {}).get("total_s"),
        "scalene_overhead_pct": overhead["overhead_pct"] if overhead else None}
    if workload == "query":
        return {**figures, "fastest_batch_size": None, "recommended_batch_size": None,
                "best_throughput_texts_per_s": query["throughput_texts_per_s"]["median"],
                "recommended_throughput_texts_per_s": query["throughput_texts_per_s"]["median"],
                "recommended_latency_ms_p95": query["latency_ms"]["p95"],
                "padding_real_share": 1.0}
    choice = result["choices"][workload]
    chosen = by_key[(workload, choice["recommended_batch_size"])]
    return {**figures, **choice, "best_throughput_texts_per_s": best[workload],
            "recommended_throughput_texts_per_s": chosen["throughput_texts_per_s"]["median"],
            "recommended_latency_ms_p95": chosen["call_latency_ms"]["p95"],
            "padding_real_share": chosen["padding"]["real_share"]}


def metrics_of(result: dict[str, Any]) -> list[Metric]:
    """Throughput per pass of bulk and stream, every query's latency, the cold start."""
    by_key = {(p["workload"], p["batch_size"]): p for p in result["points"]}
    study, found = BatchSizeStudy.NAME, []
    for workload, choice in result["choices"].items():
        for size, label in ((choice["fastest_batch_size"], "best"),
                            (DEFAULT_BATCH_SIZE, f"b{DEFAULT_BATCH_SIZE}")):
            point = by_key.get((workload, size))
            title = (f"{workload} at batch {size}" if label != "best"
                     else f"{workload} at its fastest batch size")
            if point is not None:
                found.append(metric(f"{workload}_{label}_texts_per_s", title, study, "texts/s",
                                    "higher", point["throughput_texts_per_s"]["samples"],
                                    validity=point.get("validity")))
    latencies = result["query"]["latency_ms"]["samples"]
    found += [metric("query_latency_ms_p50", "query latency, median", study, "ms", "lower",
                     latencies),
              metric("query_latency_ms_p95", "query latency, p95", study, "ms", "lower",
                     latencies, quantile=0.95)]
    cold = result["query"].get("cold_start")
    if cold:
        found.append(metric("cold_start_s", "cold start", study, "s", "lower", [cold["total_s"]]))
    return found
