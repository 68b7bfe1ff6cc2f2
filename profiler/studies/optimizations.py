"""Optimization experiments: each configuration on the chosen workload at its own best batch size.

Every variant (profiler/backends/variants.py) is built and searches the batch sizes on a sample
of the request, like a person looping over batch sizes and dtypes would. Then all of them, plain
fp32 and its A/A twin included, are timed side by side in interleaved rounds at the sizes they
found (profiler/measure/rounds.py): each speedup comes from per-round ratios to fp32. Each
variant's embeddings of the corpus are compared with fp32's.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from profiler.analysis.quality import Criterion, Quality, measure_quality, pareto_front
from profiler.backends.variants import Encode, Skip, Variant, variants
from profiler.measure.flops import model_config
from profiler.measure.memory import PeakRss
from profiler.measure.peak import Peak, cpu_flags, measure_peak, peak_dtypes
from profiler.measure.rounds import (
    AA_SUFFIX,
    AaCheck,
    Outcome,
    Rates,
    aa_check,
    paired_ratio,
    precision_of,
    ratio_widths,
    run_rounds,
)
from profiler.measure.stats import Stats, summarize
from profiler.measure.validity import MAX_CV, MIN_SAMPLES, Validity, check_paired
from profiler.storage import Record
from profiler.studies.base import Study, StudyContext, emit, round_progress
from profiler.studies.batch_size import DEFAULT_BATCH_SIZE, measured_sizes
from profiler.workloads import (
    Schedule,
    Share,
    align,
    padded,
    padding_of,
    run_schedule,
    schedule_for,
    spread,
    token_counts,
)

BASELINE = "fp32"
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
    quality: Quality | None = None
    peak_rss_increase_mb: float | None = None
    setup_s: float | None = None
    gflops_per_s: float | None = None
    useful_gflops_per_s: float | None = None
    peak_dtype: str | None = None
    peak_pct: float | None = None
    useful_peak_pct: float | None = None
    validity: Validity | None = None  # of the throughput samples: too noisy or too few?

    @property
    def is_measured(self) -> bool:
        """Whether it was timed (not skipped or failed)."""
        return self.status == "measured"

    @property
    def median(self) -> float:
        """Its median throughput in texts/s (0 when not measured)."""
        return self.throughput_texts_per_s.median if self.throughput_texts_per_s else 0.0


@dataclass(frozen=True)
class OptimizationsResult(Record):
    """Every variant against the fp32 baseline, in the same rounds, with its quality."""

    workload: str
    texts: int
    batch_sizes: list[int]
    search_texts: int
    default_batch_size: int
    quality_texts: int
    baseline: str
    quality_threshold: float
    peaks: list[Peak]
    cpu_flags: list[str]
    experiments: list[Experiment]
    round_texts: int | None = None
    search_s: float | None = None  # seconds a size's search sample was sized to (None: texts)
    rounds: Outcome | None = None  # None: measured before interleaved rounds, or no baseline
    aa: AaCheck | None = None
    quality_criterion: Criterion | None = None  # None on reading a run from before recall@k

    def __post_init__(self) -> None:
        if self.quality_criterion is None:  # such runs judged quality by mean cosine alone
            object.__setattr__(self, "quality_criterion", Criterion(self.quality_threshold))

    @property
    def criterion(self) -> Criterion:
        """What keeps quality in this run."""
        assert self.quality_criterion is not None  # set on construction
        return self.quality_criterion

    def experiment(self, name: str) -> Experiment | None:
        """The experiment of that name, if it was in the run."""
        return next((e for e in self.experiments if e.name == name), None)


@dataclass
class Bench:
    """What every variant runs: the workload's texts, the search sample, the quality texts."""

    workload: str
    texts: list[str]
    tokens: list[int]
    sizes: list[int]
    search_texts: int
    quality_texts: list[str]
    round_texts: int
    peaks: dict[str, float]
    config: dict[str, int]
    reference: np.ndarray | None = None
    base_size: int | None = None
    base_search: dict[int, float] | None = None  # the baseline's texts/s per searched size
    max_cv: float = MAX_CV  # samples spread wider than this are too noisy to claim on
    min_samples: int = MIN_SAMPLES
    search_s: float | None = None  # seconds each size's search sample is sized to (a round's)


@dataclass(frozen=True)
class Prepared:
    """A variant built and its batch size found: ready for the rounds."""

    variant: Variant
    encode: Encode
    batch_size: int
    search: dict[int, float]
    setup_s: float
    memory_mb: float


OPTIMIZATIONS_BUDGET_SHARE = 1.5  # of a comparison's budget: the most contenders of any study


class OptimizationsStudy(Study):
    """fp32 against bf16, int8, ONNX Runtime, OpenVINO, threads, shorter inputs, compile."""

    NAME = "optimizations"
    TITLE = "Optimizations"
    RESULT = OptimizationsResult

    def run(self, ctx: StudyContext) -> OptimizationsResult:
        """Measure the machine's peak; build every variant; time them all in rounds."""
        peaks = measure_peaks(ctx)
        bench = make_bench(ctx, {p.dtype: p.best_gflops for p in peaks})
        chosen = selected_variants(ctx)
        running = [v for v in chosen if runs_under(v, ctx.settings.quick)]
        bench.search_s = precision_of(ctx.settings.timing, OPTIMIZATIONS_BUDGET_SHARE).share_s(
            len(running) + 1)  # as long as a round's share: the variants and fp32's twin
        rates: Rates = {}
        outcome: Outcome | None = None
        with ExitStack() as stack:
            entries = [prepare_variant(ctx, stack, v, bench, i, len(chosen))
                       for i, v in enumerate(chosen)]
            ready = [e for e in entries if isinstance(e, Prepared)]
            if not ready or ready[0].variant.name != "fp32":
                results = [e if isinstance(e, Experiment) else _no_baseline(e.variant)
                           for e in entries]
            else:
                rates, outcome, shares = compare_variants(ctx, bench, ready)
                results = [e if isinstance(e, Experiment) else
                           measured(e, bench, rates, shares[e.variant.name]) for e in entries]
        aa = aa_check(rates, BASELINE, ctx.settings.timing.precision) if rates else None
        return OptimizationsResult(
            workload=bench.workload, texts=len(bench.texts), batch_sizes=bench.sizes,
            search_texts=bench.search_texts, search_s=bench.search_s,
            default_batch_size=DEFAULT_BATCH_SIZE,
            round_texts=bench.round_texts, rounds=outcome, aa=aa,
            quality_texts=len(bench.quality_texts), baseline=BASELINE,
            quality_threshold=ctx.settings.quality_threshold,
            quality_criterion=Criterion(ctx.settings.quality_threshold,
                                        ctx.settings.quality_recall),
            peaks=peaks, cpu_flags=cpu_flags(), experiments=results)

    @staticmethod
    def headline(result: OptimizationsResult) -> dict[str, Any]:
        """The speed-quality front and how many ran (`derive` adds the best configuration)."""
        measured = sum(e.is_measured for e in result.experiments)
        return {"workload": result.workload, "front": pareto_front(result.experiments),
                "aa": result.aa.to_dict() if result.aa else None,
                "measured": measured, "skipped": len(result.experiments) - measured}


def measure_peaks(ctx: StudyContext) -> list[Peak]:
    """The matmul peak for each dtype the device offers (shorter under --quick)."""
    emit("config", label="matmul peak", index=0, total=1)
    quick = ctx.settings.quick
    found = [measure_peak(ctx.device, dtype, size=512 if quick else 1024,
                          min_time_s=0.2 if quick else 0.3,  # the best of a few 0.3 s spells
                          repeats=2 if quick else 3) for dtype in peak_dtypes(ctx.device)]
    return [p for p in found if p is not None]


def make_bench(ctx: StudyContext, peaks: dict[str, float]) -> Bench:
    """The chosen workload over the request (query: spread-out single texts)."""
    timing, workload = ctx.settings.timing, ctx.settings.workload
    texts = spread(ctx.request, timing.query_texts) if workload == "query" else ctx.request
    sizes = ([1] if workload == "query"
             else measured_sizes(ctx.settings.batch_sizes, ctx.settings.quick, len(ctx.request)))
    return Bench(workload, texts, token_counts(ctx.model, texts, ctx.info.max_seq_length),
                 sizes, timing.search_texts, ctx.texts[:timing.quality_texts],
                 timing.round_texts, peaks, model_config(ctx.model),
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


def prepare_variant(ctx: StudyContext, stack: ExitStack, variant: Variant, bench: Bench,
                    index: int, total: int) -> Prepared | Experiment:
    """Build the variant (kept open in `stack`) and search its batch size, or say why not."""
    emit("config", label=variant.title, index=index, total=total)
    found = _prepare(ctx, stack, variant, bench)
    summary = (f"batch {found.batch_size}, {max(found.search.values()):,.0f} texts/s (sample)"
               if isinstance(found, Prepared) else found.status)
    emit("done", label=variant.title, summary=summary)
    return found


def _prepare(ctx: StudyContext, stack: ExitStack, variant: Variant,
             bench: Bench) -> Prepared | Experiment:
    base = _base(variant)
    if not runs_under(variant, ctx.settings.quick):
        return Experiment(**base, status="skipped", reason="not run under --quick")
    if (reason := same_as_baseline(variant, bench)):
        return Experiment(**base, status="skipped", reason=reason)
    started = time.perf_counter()
    try:
        with PeakRss() as memory:
            encode = stack.enter_context(variant.build(ctx))
            setup_s = time.perf_counter() - started
            search = search_batch_size(ctx, encode, bench, variant.batch_size)
    except Skip as skip:
        return Experiment(**base, status="skipped", reason=str(skip))
    except Exception as exc:  # a user's model may not export or compile: report, go on
        return Experiment(**base, status="failed", reason=_first_line(exc))
    size = max(search, key=lambda s: search[s])
    if variant.name == BASELINE:
        bench.base_size = size
    if (reason := too_slow(variant, bench, search)) is not None:
        return Experiment(**base, status="skipped", reason=reason, workload=bench.workload,
                          batch_size=size, search_texts_per_s=_keys(search))
    return Prepared(variant, encode, size, search, setup_s, memory.increase_mb)


def runs_under(variant: Variant, quick: bool) -> bool:
    """Whether the variant is built and timed in this build (--quick runs only its own set)."""
    return variant.quick or not quick


def _no_baseline(variant: Variant) -> Experiment:
    return Experiment(**_base(variant), status="skipped",
                      reason="the fp32 baseline could not be measured")


def compare_variants(ctx: StudyContext, bench: Bench, ready: list[Prepared]
                     ) -> tuple[Rates, Outcome, dict[str, Share]]:
    """Time every prepared variant and fp32's A/A twin in interleaved rounds."""
    shares = {p.variant.name: share_of(ctx, bench, p) for p in ready}
    emit("config", label=f"{len(shares) + 1} configurations, interleaved rounds", index=0,
         total=1)
    precision = precision_of(ctx.settings.timing, OPTIMIZATIONS_BUDGET_SHARE)
    share_s = precision.share_s(len(shares) + 1)
    for share in shares.values():  # warm each configuration's batch shapes, uncounted
        share.fit(share(-1), share_s)
    align(shares.values())  # configurations at the same batch size: the same batches a round
    contenders: dict[str, Any] = dict(shares)  # and fp32's twin: the same shares, round by round
    contenders[BASELINE + AA_SUFFIX] = replace(shares[BASELINE], calls=None, shares=None)
    names = [name for name in contenders if name != BASELINE]
    rates, outcome = run_rounds(
        contenders, precision, lambda r: ratio_widths(r, [(BASELINE, name) for name in names]),
        seed=2, on_round=round_progress, share_s=share_s)
    # Scalene's view of the baseline: its warm-up share again, kept out of its timed calls
    ctx.profiling.view(lambda: shares[BASELINE](-1))
    emit("done", label="interleaved rounds", summary=f"{outcome.rounds} rounds, "
                                                     f"{outcome.stopped_by}")
    return rates, outcome, shares


def share_of(ctx: StudyContext, bench: Bench, prepared: Prepared) -> Share:
    """The variant's contender: the workload's schedule at its size, its own token counts."""
    limit = prepared.variant.max_seq_length or max(bench.tokens)
    tokens = [min(count, limit) for count in bench.tokens]
    schedule = schedule_for(bench.workload, bench.texts, prepared.batch_size)
    return Share(prepared.encode, bench.texts, tokens, schedule, bench.workload == "bulk",
                 prepared.batch_size, ctx.device, bench.round_texts)


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
    """Texts/s at each batch size on evenly spaced batches of the workload's own schedule.

    Each size's sample is sized to take about `bench.search_s` at the last rate seen (the
    warm-up's, then the previous size's): whole batches, at least one, at most `search_texts`.
    """
    sizes = [fixed] if fixed else bench.sizes
    started = time.perf_counter()
    encode(bench.texts[:sizes[0]], sizes[0])  # warm-up: first-call costs
    rate = min(len(bench.texts), sizes[0]) / (time.perf_counter() - started)
    found: dict[int, float] = {}
    for size in sizes:
        schedule = schedule_for(bench.workload, bench.texts, size)
        texts = bench.search_texts if bench.search_s is None else \
            min(bench.search_texts, max(1, round(bench.search_s * rate)))
        sample = sample_batches(schedule, texts)
        seconds = sum(run_schedule(encode, bench.texts, sample, ctx.device))
        # the sample's batches may be shorter or longer than the schedule's on average: scale
        # its time by padded tokens (what a batch costs) to the whole schedule
        scale = padded(schedule, bench.tokens) / padded(sample, bench.tokens)
        found[size] = rate = len(bench.texts) / (seconds * scale)
        emit("repeat", count=size, value=f"batch {size}: {found[size]:,.0f} texts/s (sample)")
        base = (bench.base_search or {}).get(size)
        if not fixed and len(found) == 1 and base and found[size] < PRUNE_BELOW / 2 * base:
            break  # far slower than the baseline at its first size: the rest will not catch up
    return found


def sample_batches(schedule: Schedule, texts: int) -> Schedule:
    """Evenly spaced batches of a schedule holding about `texts` texts (at least one batch)."""
    per_batch = max(1, len(schedule[0]))
    count = min(len(schedule), max(1, round(texts / per_batch)))
    step = len(schedule) / count
    return [schedule[int((i + 0.5) * step)] for i in range(count)]


def measured(prepared: Prepared, bench: Bench, rates: Rates, share: Share) -> Experiment:
    """Turn a variant's rounds and embeddings into its Experiment row (fp32 comes first)."""
    variant, size, encode = prepared.variant, prepared.batch_size, prepared.encode
    embeddings = encode(bench.quality_texts, size if size > 1 else DEFAULT_BATCH_SIZE)
    if bench.reference is None:  # the baseline is everyone's reference
        bench.reference = embeddings
    name = variant.name
    # fp32's own row shows its A/A twin: the spread a no-op change gets
    timed = rates[BASELINE + AA_SUFFIX] if name == BASELINE else rates[name]
    ratio = paired_ratio(rates[BASELINE], timed)
    stats = summarize(rates[name])
    per_s = stats.median / len(bench.texts) / 1e9
    padding = padding_of(share.schedule, share.tokens, bench.config)
    gflops, useful = padding.flops_executed * per_s, padding.flops_useful * per_s
    peak_dtype = getattr(encode, "peak_dtype", variant.peak_dtype)
    peak = bench.peaks.get(peak_dtype)  # no int8 matmul peak is measured: no share
    return Experiment(
        **_base(variant), status="measured", workload=bench.workload, batch_size=size,
        search_texts_per_s=_keys(prepared.search),
        graph=str(getattr(encode, "graph", None) or variant.graph),
        threads=int(getattr(encode, "threads", None) or _torch_threads()),
        throughput_texts_per_s=stats, latency_ms_p95=_latency_p95(bench, share, rates[name]),
        speedup=1.0 if name == BASELINE else ratio.estimate, speedup_ci95=ratio.ci95,
        quality=measure_quality(bench.reference, embeddings),
        peak_rss_increase_mb=prepared.memory_mb, setup_s=prepared.setup_s, gflops_per_s=gflops,
        useful_gflops_per_s=useful, peak_dtype=peak_dtype,
        peak_pct=100 * gflops / peak if peak else None,
        useful_peak_pct=100 * useful / peak if peak else None,
        validity=check_paired(rates[BASELINE], timed, bench.max_cv, bench.min_samples))


def _latency_p95(bench: Bench, share: Share, rates: list[float]) -> float:
    """p95 milliseconds per call: a bulk call covers the whole request (estimated per round)."""
    if bench.workload == "bulk":
        return float(np.percentile([1000 * len(bench.texts) / r for r in rates], 95))
    return float(np.percentile([1000 * s for calls in share.calls or [] for s in calls], 95))


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _base(variant: Variant) -> dict[str, Any]:
    return {"name": variant.name, "title": variant.title, "family": variant.family,
            "effort": variant.effort, "snippet": variant.snippet}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
