"""Batch-size study: bulk and stream at every batch size, single queries, and padding remedies.

Batch sizes, and the stream's padding remedies, are compared in interleaved rounds
(profiler/measure/rounds.py): each round runs every contender once, in a shuffled order, on a
share of the batches the whole request forms (profiler/workloads.py), with an A/A twin of the
reference; rounds stop once every claim is precise enough or the study's budget is spent.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from profiler.config import Settings
from profiler.measure.callprofile import profile_call
from profiler.measure.flops import model_config
from profiler.measure.memory import cuda_peaks_mb, cuda_reset_peak
from profiler.measure.metrics import Metric, metric
from profiler.measure.rounds import (
    AA_SUFFIX,
    AaCheck,
    Claims,
    Outcome,
    Rates,
    aa_check,
    paired_ratio,
    precision_of,
    rate_width,
    ratio_widths,
    run_rounds,
)
from profiler.measure.stats import Stats, summarize
from profiler.measure.validity import Validity, check, check_paired
from profiler.runner.probes import plain_env, plain_python
from profiler.storage import Record
from profiler.studies.base import (
    Study,
    StudyContext,
    emit,
    quick_subset,
    round_progress,
)
from profiler.workloads import (
    DESCRIPTIONS,
    Padding,
    Schedule,
    Share,
    model_encode,
    padding_of,
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
REMEDY_BUDGET_SHARE = 0.5  # of a comparison's budget: the remedies are a side question


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


@dataclass(frozen=True)
class Choice:
    """A workload's fastest batch size, and the smallest within `recommend_within` of it."""

    fastest_batch_size: int
    recommended_batch_size: int


@dataclass(frozen=True)
class Query:
    """Single-text calls: the latency of each, throughput over chunks, and a cold start."""

    queries: int
    latency_ms: Stats
    throughput_texts_per_s: Stats
    validity: Validity | None
    mean_tokens: float
    cold_start: dict[str, float] | None = None  # import_s, load_s, first/second call, total_s


@dataclass(frozen=True)
class RequestFacts:
    """What one request holds: how many texts, from how many corpus texts, how long."""

    texts: int
    corpus_texts: int
    cycled: bool
    asked: int | None
    max_seq_length: int
    tokens_mean: float
    tokens_p50: float
    tokens_p95: float
    tokens_max: int
    at_limit_share: float


@dataclass(frozen=True)
class BatchSizeResult(Record):
    """Every workload at every batch size, measured in the same rounds; queries; remedies."""

    workload: str  # the one the user serves: its choice is the claim
    descriptions: dict[str, str]
    request: RequestFacts
    default_batch_size: int
    recommend_within: float
    points: list[WorkloadPoint]
    choices: dict[str, Choice]  # per batched workload
    query: Query
    reference: str | None = None  # the rounds' reference contender (None: before rounds)
    rounds: Outcome | None = None
    aa: AaCheck | None = None
    round_texts: int | None = None
    remedies: list[Remedy] = field(default_factory=list)
    remedy_rounds: Outcome | None = None
    scalene_overhead: Overhead | None = None
    reference_profile: dict[str, Any] | None = None  # cProfile's (profiler/measure/callprofile)

    def points_of(self, workload: str) -> dict[int, WorkloadPoint]:
        """A workload's points by batch size."""
        return {p.batch_size: p for p in self.points if p.workload == workload}

    def remedy(self, name: str) -> Remedy | None:
        """The padding remedy (or the plain `stream`) of that name, if measured."""
        return next((r for r in self.remedies if r.name == name), None)


class BatchSizeStudy(Study):
    """Bulk and stream throughput at each batch size; query latency; padding and its remedies."""

    NAME = "batch_size"
    TITLE = "Batch size and workloads"
    RESULT = BatchSizeResult

    def run(self, ctx: StudyContext) -> BatchSizeResult:
        """Compare batch sizes in rounds, pick them, time queries and the padding remedies."""
        texts = ctx.request
        tokens = token_counts(ctx.model, texts, ctx.info.max_seq_length)
        sizes = measured_sizes(ctx.settings.batch_sizes, ctx.settings.quick, len(texts))
        quick = ctx.settings.quick
        # a fresh process: a full build's question, unless the settings leave it out
        cold = cold_start(ctx) if ctx.settings.cold_start and not quick else None
        ctx.model.encode(texts[:sizes[0]], batch_size=sizes[0])  # first-call costs: no size's
        workloads = batched_workloads(ctx.settings)
        comparison = measure_batched(ctx, texts, tokens, sizes, workloads)
        points = comparison.points
        chosen = {w: pick_batch_sizes([p for p in points if p.workload == w],
                                      ctx.settings.recommend_within) for w in workloads}
        query = measure_query(ctx, texts, tokens)
        remedies: list[Remedy] = []
        remedy_rounds: Outcome | None = None
        if "stream" in chosen:
            remedies, remedy_rounds = measure_remedies(ctx, texts, tokens, chosen["stream"][1])
        overhead, bulk_size = None, chosen[compared_workload(ctx.settings.workload)][1]
        if ctx.profiling.under_scalene:
            overhead = measure_overhead(ctx, bulk_size)
        reference = reference_profile(ctx, bulk_size)
        return BatchSizeResult(
            workload=ctx.settings.workload, descriptions=DESCRIPTIONS,
            request=request_facts(ctx, texts, tokens), default_batch_size=DEFAULT_BATCH_SIZE,
            recommend_within=ctx.settings.recommend_within, reference=comparison.reference,
            rounds=comparison.outcome, aa=comparison.aa,
            round_texts=ctx.settings.timing.round_texts, points=points,
            choices={w: Choice(f, r) for w, (f, r) in chosen.items()},
            query=replace(query, cold_start=cold), remedies=remedies, remedy_rounds=remedy_rounds,
            scalene_overhead=overhead, reference_profile=reference)

    @staticmethod
    def headline(result: BatchSizeResult) -> dict[str, Any]:
        """The chosen workload's best and recommended figures; every workload's best."""
        return headline_of(result)

    @staticmethod
    def metrics(result: BatchSizeResult) -> list[Metric]:
        """Each batched workload at its fastest size and at 32; query latency; cold start."""
        return metrics_of(result)


def measured_sizes(sizes: tuple[int, ...], quick: bool = False,
                   texts: int | None = None) -> list[int]:
    """The batch sizes asked for (under --quick three of them), plus the default 32, in order.

    Sizes above half the request are left out (the smallest is always kept): one batch of
    the whole request is no batching question.
    """
    fitting = [s for s in sizes if texts is None or 2 * s <= texts] or [min(sizes)]
    return sorted({*(quick_subset(fitting) if quick else fitting), DEFAULT_BATCH_SIZE})


def batched_workloads(settings: Settings) -> tuple[str, ...]:
    """Bulk and stream; under --quick only the one whose batch size is the claim."""
    return (compared_workload(settings.workload),) if settings.quick else BATCHED


@dataclass(frozen=True)
class Comparison:
    """Every batch size's point, measured in the same rounds, and how the rounds went."""

    points: list[WorkloadPoint]
    reference: str
    outcome: Outcome
    aa: AaCheck | None


def compared_workload(workload: str) -> str:
    """The batched workload whose sizes are the claim: the chosen one, bulk for queries."""
    return workload if workload in BATCHED else "bulk"


def contender(workload: str, size: int) -> str:
    """A contender's name in the rounds: `bulk@32`."""
    return f"{workload}@{size}"


def measure_batched(ctx: StudyContext, texts: list[str], tokens: list[int],
                    sizes: list[int], workloads: tuple[str, ...] = BATCHED) -> Comparison:
    """Bulk and stream at every size, and the reference's A/A twin, in interleaved rounds."""
    encode, timing = model_encode(ctx.model), ctx.settings.timing
    reference = contender(compared_workload(ctx.settings.workload), DEFAULT_BATCH_SIZE)
    shares = {contender(w, size): Share(encode, texts, tokens, schedule_for(w, texts, size),
                                        w == "bulk", size, ctx.device, timing.round_texts)
              for w in workloads for size in sizes}
    cuda: dict[int, dict[str, float] | None] = {}
    runners = {name: _with_cuda_peak(share, cuda, ctx.device) for name, share in shares.items()}
    emit("config", label=f"{len(shares) + 1} batch-size contenders, interleaved rounds",
         index=0, total=1)
    precision = precision_of(timing)
    share_s = precision.share_s(len(shares) + 1)
    for name, run in runners.items():  # warm every batch shape once, uncounted; size its share
        shares[name].fit(run(-1), share_s)
    twin = reference + AA_SUFFIX  # the reference again: the same shares, round by round
    shares[twin] = replace(shares[reference], calls=None, shares=None)
    runners[twin] = _with_cuda_peak(shares[twin], cuda, ctx.device)
    rates, outcome = run_rounds(runners, precision, _claims(ctx, reference, sizes, workloads),
                                on_round=round_progress, share_s=share_s)
    emit("done", label="batch sizes", summary=f"{outcome.rounds} rounds, {outcome.stopped_by}")
    config = model_config(ctx.model)
    points = [point(w, size, texts, tokens, shares[contender(w, size)], rates, config,
                    cuda.get(size), ctx, reference) for w in workloads for size in sizes]
    return Comparison(points, reference, outcome, aa_check(rates, reference, timing.precision))


def _with_cuda_peak(share: Share, cuda: dict[int, dict[str, float] | None],
                    device: str) -> Callable[[int], float]:
    """The share's run, keeping the largest CUDA memory peak seen at its batch size."""
    def run(round_: int) -> float:
        cuda_reset_peak(device)
        rate = share(round_)
        peaks = cuda_peaks_mb(device)
        if peaks is not None:
            before = cuda.get(share.batch_size) or {}
            cuda[share.batch_size] = {k: max(v, before.get(k, 0.0)) for k, v in peaks.items()}
        return rate
    return run


def _claims(ctx: StudyContext, reference: str, sizes: list[int],
            workloads: tuple[str, ...]) -> Claims:
    """What must be precise: the A/A, each workload's fastest size against 32, the chosen
    workload's recommended size against its fastest, and the headline throughput."""
    within, chosen = ctx.settings.recommend_within, reference.split("@")[0]

    def claims(rates: Rates) -> dict[str, float]:
        pairs = [(reference, reference + AA_SUFFIX)]
        headline = math.inf
        for workload in workloads:
            medians = {s: float(np.median(rates[contender(workload, s)])) for s in sizes}
            fastest = max(medians, key=lambda s: medians[s])
            pairs.append((contender(workload, DEFAULT_BATCH_SIZE), contender(workload, fastest)))
            if workload == chosen:
                floor = medians[fastest] * (1 - within)
                recommended = min(s for s in sizes if medians[s] >= floor)
                pairs.append((contender(workload, fastest), contender(workload, recommended)))
                headline = rate_width(rates[contender(workload, fastest)])
        widths = ratio_widths(rates, [(a, b) for a, b in pairs if a != b])
        return {**widths, f"{chosen} at its fastest size": headline}
    return claims


def point(workload: str, size: int, texts: list[str], tokens: list[int], share: Share,
          rates: Rates, config: dict[str, int], cuda: dict[str, float] | None,
          ctx: StudyContext, reference: str) -> WorkloadPoint:
    """Summarize one workload at one size from its rounds."""
    name = contender(workload, size)
    throughput = summarize(rates[name])
    if workload == "bulk":  # one call over the whole request: its estimated seconds per round
        latencies = [1000 * len(texts) / rate for rate in rates[name]]
    else:
        latencies = [1000 * s for calls in share.calls or [] for s in calls]
    twin = reference + AA_SUFFIX if name == reference else reference
    return WorkloadPoint(
        workload=workload, batch_size=size, texts=len(texts),
        calls_per_pass=1 if workload == "bulk" else len(share.schedule),
        throughput_texts_per_s=throughput, call_latency_ms=summarize(latencies),
        latency_per_text_ms=1000.0 / throughput.median,
        tokens_per_s=sum(tokens) * throughput.median / len(texts),
        padding=padding_of(share.schedule, tokens, config), cuda_memory_mb=cuda,
        validity=paired_validity(rates[twin], rates[name], ctx))


def paired_validity(base: list[float], new: list[float], ctx: StudyContext) -> Validity:
    """Whether a figure can carry a claim: its paired interval against the reference."""
    return check_paired(base, new, ctx.settings.max_cv, ctx.settings.min_samples)


def pick_batch_sizes(points: list[WorkloadPoint], within: float) -> tuple[int, int]:
    """Return the fastest batch size and the smallest within `within` of its throughput.

    Every size measured in the rounds takes part: the rounds made them comparable, and a size
    whose interval is wide is marked on the page (and carries no recommendation) rather than
    passed over for a slower one.
    """
    fastest = max(points, key=lambda p: p.throughput_texts_per_s.median)
    floor = fastest.throughput_texts_per_s.median * (1 - within)
    recommended = min(p.batch_size for p in points if p.throughput_texts_per_s.median >= floor)
    return fastest.batch_size, recommended


def measure_query(ctx: StudyContext, texts: list[str], tokens: list[int]) -> Query:
    """One text per call over spread-out texts of the request: latency of every call."""
    queries = spread(texts, ctx.settings.timing.query_texts)
    emit("config", label=f"query: {len(queries)} single-text calls", index=0, total=1)
    encode = model_encode(ctx.model)
    seconds = run_workload("query", encode, queries, 1, ctx.device)
    chunks = [seconds[i:i + QUERY_CHUNK] for i in range(0, len(seconds), QUERY_CHUNK)]
    latency = summarize([1000 * s for s in seconds])
    throughput = [len(c) / sum(c) for c in chunks]
    emit("done", label="query", summary=f"p95 {latency.p95:,.1f} ms")
    return Query(queries=len(queries), latency_ms=latency,
                 throughput_texts_per_s=summarize(throughput),
                 validity=check(throughput, ctx.settings.max_cv, ctx.settings.min_samples),
                 mean_tokens=float(np.mean(token_counts(ctx.model, queries,
                                                        ctx.info.max_seq_length))))


def cold_start(ctx: StudyContext) -> dict[str, float] | None:
    """Time a fresh process's imports, model load and first two single-text calls."""
    emit("config", label="cold start (fresh process)", index=0, total=1)
    request = {"model_path": ctx.info.path, "device": ctx.device, "text": ctx.request[0],
               "trust_remote_code": ctx.settings.trust_remote_code}
    done = subprocess.run([plain_python(), "-m", "profiler.runner.cold_start"],
                          input=json.dumps(request), capture_output=True, text=True, check=False,
                          env=plain_env())
    if done.returncode != 0:
        emit("done", label="cold start", summary="failed")
        return None
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
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
                     size: int) -> tuple[list[Remedy], Outcome | None]:
    """The stream and its padding remedies in interleaved rounds; speedups paired with the stream.

    A sort-window remedy runs whole windows, so each text's latency counts the wait for the
    batches sorted ahead of it.
    """
    budget = default_budget(tokens, size, ctx.settings.token_budget)
    plans = remedy_schedules(texts, tokens, size, budget)
    if ctx.settings.quick and ctx.settings.token_budget is None:  # one remedy is enough to check
        plans.pop("token_budget")
    encode, round_texts = model_encode(ctx.model), ctx.settings.timing.round_texts
    shares = {name: Share(encode, texts, tokens, schedule, False, size, ctx.device,
                          max(round_texts, size * (window or 1)), window or 1)
              for name, (_, schedule, window) in plans.items()}
    emit("config", label=f"padding remedies at batch {size}", index=0, total=1)
    precision = precision_of(ctx.settings.timing, REMEDY_BUDGET_SHARE)
    share_s = precision.share_s(len(shares))
    for share in shares.values():
        share.fit(share(-1), share_s)
    rates, outcome = run_rounds(
        dict(shares), precision,
        lambda r: ratio_widths(r, [("stream", name) for name in shares if name != "stream"]),
        seed=1, on_round=round_progress, share_s=share_s)
    config = model_config(ctx.model)
    rows = [remedy(name, title, shares[name], window, rates, len(texts), size,
                   budget if name == "token_budget" else None, tokens, config, ctx)
            for name, (title, _, window) in plans.items()]
    emit("done", label="padding remedies", summary=f"{len(rows) - 1} remedies")
    return with_added_latency(rows), outcome


def remedy(name: str, title: str, share: Share, window: int | None, rates: Rates, texts: int,
           size: int, budget: int | None, tokens: list[int], config: dict[str, int],
           ctx: StudyContext) -> Remedy:
    """Summarize one remedy's rounds; its speedup is paired with the plain stream's."""
    latencies = [ms for calls, part in zip(share.calls or [], share.shares or [], strict=True)
                 for ms in window_latencies_ms(calls, part, window or 1)]
    row = Remedy(name=name, title=title, batch_size=size, window_batches=window,
                 token_budget=budget, calls_per_pass=len(share.schedule),
                 throughput_texts_per_s=summarize(rates[name]),
                 latency_ms=summarize(latencies), padding=padding_of(share.schedule, tokens,
                                                                    config),
                 validity=paired_validity(rates["stream"], rates[name], ctx))
    if name == "stream":
        return row
    ratio = paired_ratio(rates["stream"], rates[name])
    return replace(row, speedup=ratio.estimate, speedup_ci95=ratio.ci95)


def with_added_latency(rows: list[Remedy]) -> list[Remedy]:
    """Each remedy's p95 latency over the plain stream's."""
    stream = rows[0].latency_ms.p95
    return [r if r.name == "stream" else replace(r, added_latency_ms_p95=r.latency_ms.p95 - stream)
            for r in rows]


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


def reference_profile(ctx: StudyContext, batch_size: int) -> dict[str, Any]:
    """cProfile over one plain bulk encode, as Scalene profiled it: its hotspots' cross-check."""
    texts = spread(ctx.request, ctx.settings.timing.texts_per_repeat)
    return profile_call(lambda: model_encode(ctx.model)(texts, batch_size),
                        f"one bulk encode of {len(texts)} texts at batch {batch_size}")


def request_facts(ctx: StudyContext, texts: list[str], tokens: list[int]) -> RequestFacts:
    """What one request holds: how many texts, from how many corpus texts, how long."""
    counts = np.asarray(tokens)
    return RequestFacts(
        texts=len(texts), corpus_texts=len(ctx.texts), cycled=len(texts) > len(ctx.texts),
        asked=ctx.settings.request_size, max_seq_length=ctx.info.max_seq_length,
        tokens_mean=float(counts.mean()), tokens_p50=float(np.median(counts)),
        tokens_p95=float(np.percentile(counts, 95)), tokens_max=int(counts.max()),
        at_limit_share=float(np.mean(counts >= ctx.info.max_seq_length)))


def headline_of(result: BatchSizeResult) -> dict[str, Any]:
    """Pick the chosen workload's figures (query: latency per call) for summary.json."""
    workload, query, rounds = result.workload, result.query, result.rounds
    best = {w: result.points_of(w)[c.fastest_batch_size].throughput_texts_per_s.median
            for w, c in result.choices.items()}
    figures: dict[str, Any] = {
        "workload": workload, "request_texts": result.request.texts,
        "bulk_best_texts_per_s": best.get("bulk"), "stream_best_texts_per_s": best.get("stream"),
        "query_latency_ms_p50": query.latency_ms.p50,
        "query_latency_ms_p95": query.latency_ms.p95,
        "query_latency_ms_p99": query.latency_ms.p99,
        "query_latency_ms_max": query.latency_ms.max,
        "cold_start_s": (query.cold_start or {}).get("total_s"),
        "scalene_overhead_pct": (result.scalene_overhead.overhead_pct
                                 if result.scalene_overhead else None),
        "aa": result.aa.to_dict() if result.aa else None,
        "rounds": rounds.rounds if rounds else None,
        "stopped_by": rounds.stopped_by if rounds else None}
    if workload == "query":
        return {**figures, "fastest_batch_size": None, "recommended_batch_size": None,
                "best_throughput_texts_per_s": query.throughput_texts_per_s.median,
                "recommended_throughput_texts_per_s": query.throughput_texts_per_s.median,
                "recommended_latency_ms_p95": query.latency_ms.p95,
                "padding_real_share": 1.0}
    choice = result.choices[workload]
    chosen = result.points_of(workload)[choice.recommended_batch_size]
    return {**figures, **asdict(choice), "best_throughput_texts_per_s": best[workload],
            "recommended_throughput_texts_per_s": chosen.throughput_texts_per_s.median,
            "recommended_latency_ms_p95": chosen.call_latency_ms.p95,
            "padding_real_share": chosen.padding.real_share}


def metrics_of(result: BatchSizeResult) -> list[Metric]:
    """Throughput per pass of bulk and stream, every query's latency, the cold start."""
    study, found = BatchSizeStudy.NAME, []
    for workload, choice in result.choices.items():
        points = result.points_of(workload)
        for size, label in ((choice.fastest_batch_size, "best"),
                            (DEFAULT_BATCH_SIZE, f"b{DEFAULT_BATCH_SIZE}")):
            point = points.get(size)
            title = (f"{workload} at batch {size}" if label != "best"
                     else f"{workload} at its fastest batch size")
            if point is not None:
                found.append(metric(f"{workload}_{label}_texts_per_s", title, study, "texts/s",
                                    "higher", point.throughput_texts_per_s.samples,
                                    validity=point.validity.to_dict() if point.validity else None))
    latencies = result.query.latency_ms.samples
    found += [metric("query_latency_ms_p50", "query latency, median", study, "ms", "lower",
                     latencies),
              metric("query_latency_ms_p95", "query latency, p95", study, "ms", "lower",
                     latencies, quantile=0.95)]
    cold = result.query.cold_start
    if cold:
        found.append(metric("cold_start_s", "cold start", study, "s", "lower", [cold["total_s"]]))
    return found
