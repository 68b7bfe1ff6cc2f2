"""Rank bottlenecks by what removing them would save on the chosen workload, as measured.

A bottleneck names a change and its impact is the measured share of the workload's time that
change removed: 1 − 1/speedup, with the 95% interval of that share. Only savings whose whole
interval lies above zero are ranked, and only when neither timing behind it is unreliable (too
noisy or too few samples: profiler/measure/validity.py). Facts no change removes (the forward
pass's share, memory growing with batch size, the cost of long synthetic texts) are listed as
context instead.
Severity comes from the impact: high at 30% or more, medium at 10% or more, low below. Memory
over its budget and a leak are always high. A family of experiments is sized by its best change
that keeps quality (mean cosine to fp32 at the run's threshold); when only changes that cost
quality remove it, the bottleneck says so and ranks after every quality-keeping one. A gain
inside a failed A/A check's spread is no gain. The methodology page states the same rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from profiler.analysis.recommendations import aa_floor
from profiler.measure.stats import speedup
from profiler.measure.validity import unreliable
from profiler.storage import Record

if TYPE_CHECKING:
    from profiler.measure.stats import Stats
    from profiler.studies.batch_size import BatchSizeResult
    from profiler.studies.leak import LeakResult
    from profiler.studies.memory import MemoryResult
    from profiler.studies.optimizations import OptimizationsResult
    from profiler.studies.stages import StagesResult
    from profiler.studies.text_length import TextLengthResult

SEVERITY = (("high", 30.0), ("medium", 10.0), ("low", 0.0))
ORDER = {name: rank for rank, (name, _) in enumerate(SEVERITY)}
PADDING_MARGIN = 0.02  # the stream must pad at least this share of tokens more than bulk
FAMILIES = {"dtype": ("bf16", "fp16", "torch_int8"),
            "backend": ("onnx", "onnx_o2", "onnx_int8", "openvino", "openvino_bf16", "compile")}


@dataclass(frozen=True)
class Bottleneck(Record):
    """A measured cost, the change that removes it, how much it saves and the figures behind it."""

    title: str
    study: str
    impact_pct: float
    impact_ci95_pct: list[float] | None
    severity: str
    change: str
    evidence: str
    workload: str
    keeps_quality: bool = True  # False: only a change that costs quality removes it


@dataclass(frozen=True)
class Context(Record):
    """A measured fact that explains the figures but that no single change removes."""

    title: str
    study: str
    evidence: str


def severity_of(impact_pct: float) -> str:
    """Map a measured impact in percent to high, medium or low."""
    return next((name for name, floor in SEVERITY if impact_pct >= floor), "low")


def speedup_of(base: Stats, faster: Stats, result: Any) -> tuple[float, tuple[float, float]]:
    """Throughput ratio of two figures of `result` with its 95% interval (paired when the study
    measured them in interleaved rounds)."""
    return speedup(base.samples, faster.samples, paired=result.rounds is not None)


def _found(title: str, study: str, speedup: tuple[float, Any], change: str, evidence: str,
           workload: str, keeps_quality: bool = True) -> Bottleneck | None:
    """A bottleneck worth 1 − 1/speedup of the time, if the interval's low end is above 1."""
    ratio, (low, high) = speedup
    if low <= 1:  # the saving is within the noise: nothing to rank
        return None
    impact = 100 * (1 - 1 / ratio)
    return Bottleneck(title, study, round(impact, 2),
                      [round(100 * (1 - 1 / low), 2), round(100 * (1 - 1 / high), 2)],
                      severity_of(impact), change, evidence, workload, keeps_quality)


def _reliable(*figures: Any) -> bool:
    """Whether every figure's samples can carry a claim (figures without a check can)."""
    return all(unreliable(f) is None for f in figures)


def padding(result: BatchSizeResult) -> Bottleneck | None:
    """A stream pads every batch to its longest text; sorting by length removes most of it."""
    if result.workload != "stream":
        return None
    size = result.choices["stream"].recommended_batch_size
    bulk_points = result.points_of("bulk")
    if size not in bulk_points:  # --quick times the stream alone
        return None
    stream, bulk = result.points_of("stream")[size], bulk_points[size]
    if stream.padding.real_share > bulk.padding.real_share - PADDING_MARGIN:
        return None  # both pad alike: a gap between them is not padding's
    if not _reliable(stream, bulk):
        return None
    remedies = [r for r in result.remedies if r.name != "stream" and r.speedup_ci95
                and r.speedup_ci95[0] > 1 and _reliable(r)]
    change = (f"{max(remedies, key=lambda r: r.speedup or 0).title} (see Recommendations)"
              if remedies else "sort texts by length before batching them")
    evidence = (f"batch {size}: the stream's batches are {_pct(stream.padding.real_share)} "
                f"real tokens against {_pct(bulk.padding.real_share)} sorted by length; "
                f"{_tp(stream)} texts/s in arrival order, {_tp(bulk)} length-sorted")
    return _found("Padding in arrival-order batches", "batch_size",
                  speedup_of(stream.throughput_texts_per_s, bulk.throughput_texts_per_s, result),
                  change, evidence, "stream")


def batch_size_choice(result: BatchSizeResult) -> Bottleneck | None:
    """The default batch size (32) against the fastest one, on the chosen workload."""
    workload = result.workload
    if workload == "query":
        return None
    points, default = result.points_of(workload), result.default_batch_size
    best = result.choices[workload].recommended_batch_size
    if best == default or default not in points or not _reliable(points[default], points[best]):
        return None
    return _found(f"Batch size {default} (sentence-transformers' default)", "batch_size",
                  speedup_of(points[default].throughput_texts_per_s,
                             points[best].throughput_texts_per_s, result),
                  f"batch_size={best}",
                  f"{workload}: {_tp(points[default])} texts/s at batch {default}, "
                  f"{_tp(points[best])} at batch {best}", workload)


def experiment_family(title: str, names: tuple[str, ...] | Callable[[str], bool]
                      ) -> Callable[[OptimizationsResult], Bottleneck | None]:
    """A rule: the best measured experiment of a family that keeps quality, as the bottleneck it
    removes; else its best one that costs quality, marked so."""
    def member(name: str) -> bool:
        return names(name) if callable(names) else name in names

    def rule(result: OptimizationsResult) -> Bottleneck | None:
        base = result.experiment("fp32")
        floor = 1 + aa_floor(result)
        picked = [e for e in result.experiments if e.is_measured and member(e.name)
                  and e.speedup_ci95 and e.speedup_ci95[0] > floor  # beyond the noise
                  and _reliable(e)]
        if base is None or not base.is_measured or not picked or not _reliable(base):
            return None
        criterion = result.criterion
        keeping = [e for e in picked if criterion.missed(e.quality) is None]
        best = max(keeping or picked, key=lambda e: e.speedup or 0.0)
        cost = f", mean cosine to fp32 {best.quality.cosine_mean:.5f}" if best.quality else ""
        if not keeping:
            cost += f" (misses {criterion.describe()})"
        speedup = best.speedup or 1.0
        return _found(title, "optimizations", (speedup, best.speedup_ci95), best.title,
                      f"{best.title} at batch {best.batch_size}: {speedup:.2f}× "
                      f"the fp32 baseline at batch {base.batch_size}{cost}",
                      result.workload, keeps_quality=bool(keeping))
    return rule


def leak(result: LeakResult) -> Bottleneck | None:
    """A steady-state RSS slope whose interval clears the threshold: always high."""
    if not result.leak:
        return None
    fit, last = result.fit, result.rss_mb[-1]
    low, high = fit.slope_ci95 or (fit.slope, fit.slope)
    growth = 100 * result.growth_mb_per_1000_iterations / last
    return Bottleneck("Memory leak", "leak", round(growth, 2), None, "high",
                      "find what keeps each batch's output alive",
                      f"RSS grows {fit.slope:,.3f} MB per iteration (95% interval "
                      f"{low:,.3f} to {high:,.3f}); impact is "
                      f"the growth over 1,000 iterations against {last:,.0f} MB", "bulk")


def memory_budget(result: MemoryResult, budget_mb: float) -> Bottleneck | None:
    """Peak memory above the budget at the largest batch size: always high."""
    largest = result.largest
    over = largest.peak_rss_mb - budget_mb
    if over <= 0:
        return None
    return Bottleneck("Peak memory over budget", "memory", round(100 * over / budget_mb, 2),
                      None, "high", "a smaller batch size or a smaller dtype",
                      f"batch {largest.batch_size} peaks at {largest.peak_rss_mb:,.0f} MB "
                      f"against a budget of {budget_mb:,.0f} MB", "bulk")


RULES: dict[str, tuple[Callable[[Any], Bottleneck | None], ...]] = {
    "batch_size": (padding, batch_size_choice),
    "optimizations": (
        experiment_family("Long inputs", lambda name: name.startswith("max_seq_")),
        experiment_family("Thread count", lambda name: name.startswith("threads_")),
        experiment_family("fp32 weights", FAMILIES["dtype"]),
        experiment_family("PyTorch eager backend", FAMILIES["backend"])),
    "leak": (leak,),
}


def find_bottlenecks(results: dict[str, Any], memory_budget_mb: float = 2048.0
                     ) -> list[Bottleneck]:
    """Apply every rule to the studies present (typed results); rank by severity, then impact."""
    found: list[Bottleneck] = []
    chosen = getattr(results.get("batch_size"), "workload", None)
    for study, rules in RULES.items():
        workload = getattr(results.get(study), "workload", None)
        if study in results and not (chosen and workload and workload != chosen):
            found += [b for rule in rules if (b := rule(results[study])) is not None]
    if "memory" in results and (over := memory_budget(results["memory"], memory_budget_mb)):
        found.append(over)
    return sorted(found, key=lambda b: (not b.keeps_quality, ORDER[b.severity], -b.impact_pct))


def find_context(results: dict[str, Any], memory_budget_mb: float = 2048.0) -> list[Context]:
    """The measured facts that explain the figures but are not removable costs."""
    facts: list[Context | None] = []
    if "batch_size" in results:
        facts += [padding_context(results["batch_size"]), tail(results["batch_size"])]
    if "stages" in results:
        facts.append(stage_shares(results["stages"]))
    if "memory" in results:
        facts.append(memory_growth(results["memory"], memory_budget_mb))
    if "text_length" in results:
        facts.append(long_texts(results["text_length"]))
    return [f for f in facts if f is not None]


def padding_context(result: BatchSizeResult) -> Context:
    """How much of each workload's work is padding at its recommended batch size."""
    parts = []
    for workload, choice in result.choices.items():
        size = choice.recommended_batch_size
        share = result.points_of(workload)[size].padding.real_share
        parts.append(f"{workload} at batch {size}: {_pct(share)} of computed tokens are real")
    return Context("Padding", "batch_size", "; ".join(parts) + "; a query has none")


def tail(result: BatchSizeResult) -> Context:
    """Single-query latency tail and cold start."""
    latency, cold = result.query.latency_ms, result.query.cold_start
    start = (f"; a cold start (import, load, first call) takes {cold['total_s']:,.1f} s"
             if cold else "")
    return Context("Query latency", "batch_size",
                   f"one text per call: p50 {latency.p50:,.1f} ms, p99 {latency.p99:,.1f} "
                   f"ms, max {latency.max:,.1f} ms{start}")


def stage_shares(result: StagesResult) -> Context:
    """Where encoding time goes, stage by stage: the forward pass is the model itself."""
    share = {stage: result.mean_share(stage) for stage in result.stages}
    return Context("The forward pass is the work", "stages",
                   f"forward {_pct(share['forward'])}, tokenization {_pct(share['tokenize'])}, "
                   f"pooling {_pct(share['pooling'])} of encoding time (mean over batch sizes)")


def memory_growth(result: MemoryResult, budget_mb: float) -> Context:
    """Activation memory per text in a batch, and the peak against the budget."""
    largest = result.largest
    per_text = f"; {result.fit.slope:,.2f} MB per extra text in a batch" if result.fit else ""
    return Context("Memory grows with batch size", "memory",
                   f"batch {largest.batch_size} peaks at {largest.peak_rss_mb:,.0f} MB, "
                   f"{_pct(largest.peak_rss_mb / budget_mb)} of the {budget_mb:,.0f} MB "
                   f"budget{per_text}")


def long_texts(result: TextLengthResult) -> Context | None:
    """Synthetic texts of growing length: what a longer input costs per text."""
    points = sorted(result.points, key=lambda p: p.target_chars)
    if len(points) < 2:
        return None
    short, long = points[0], points[-1]
    return Context("Longer texts cost more per text", "text_length",
                   f"{_tp(long)} texts/s at {long.target_chars:,} characters against "
                   f"{_tp(short)} at {short.target_chars:,} "
                   f"({long.tokens_per_text_mean:,.0f} vs {short.tokens_per_text_mean:,.0f} "
                   "tokens per text)")


def _tp(point: Any) -> str:
    return f"{point.throughput_texts_per_s.median:,.1f}"


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"
