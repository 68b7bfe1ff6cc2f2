"""Turn measured optimizations into ranked recommendations, each with its gain, cost and snippet.

A change is recommended only when it was measured and its gain is outside the noise: the low end
of the speedup's 95% bootstrap interval is above 1, and neither its timing nor its reference's is
unreliable (too noisy or too few samples: profiler/measure/validity.py). It is lossless when its
mean cosine to the baseline's embeddings reaches the study's quality threshold (a missing quality
counts as lossy).
Priority (see priority_of): quick win = lossless and one line; medium term = lossless with a few
lines or an export step, or lossy with one line; long term = everything else (a compile step, a
lossy export). Recommendations rank by priority, then by gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from profiler.analysis.quality import Criterion, Quality
from profiler.measure.stats import speedup as paired_speedup
from profiler.measure.validity import unreliable
from profiler.storage import Record

if TYPE_CHECKING:
    from profiler.studies.batch_size import BatchSizeResult, Remedy
    from profiler.studies.optimizations import Experiment, OptimizationsResult

PRIORITIES = ("quick win", "medium term", "long term")
ORDER = {name: rank for rank, name in enumerate(PRIORITIES)}
LOSSLESS_PRIORITY = {"one line": "quick win", "a few lines": "medium term",
                     "an export step": "medium term"}
LOSSY_PRIORITY = {"one line": "medium term"}
DEFAULT_BATCH_SIZE = 32  # sentence-transformers' encode() default


@dataclass(frozen=True)
class Recommendation(Record):
    """One change worth making: what it gains, what it costs and how to make it."""

    title: str
    experiment: str
    why: str
    gain_pct: float
    gain_ci95_pct: tuple[float, float]
    quality_cost: str
    lossless: bool
    effort: str
    priority: str
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        """Return the recommendation as plain (JSON-equal) data."""
        data = super().to_dict()
        data["gain_ci95_pct"] = list(self.gain_ci95_pct)
        return data


def priority_of(lossless: bool, effort: str) -> str:
    """Map whether a change keeps quality, and how much work it is, to a priority."""
    return (LOSSLESS_PRIORITY if lossless else LOSSY_PRIORITY).get(effort, "long term")


def recommend(optimizations: OptimizationsResult | None, batch_size: BatchSizeResult | None = None
              ) -> list[Recommendation]:
    """Recommend each measured change whose gain clears the noise; rank by priority, then gain.

    Every recommendation comes from the workload the user serves (`workload` in both results).
    """
    found: list[Recommendation] = []
    source = batch_size or optimizations
    workload = source.workload if source is not None else None
    if optimizations is not None and optimizations.workload == workload:
        found += [_from_experiment(e, optimizations) for e in _measured(optimizations)
                  if _rejection(e, optimizations) is None]
    if batch_size is not None:
        found += [r for r, why in batch_advice(batch_size) if why is None]
    return sorted(found, key=lambda r: (ORDER[r.priority], -r.gain_pct))


def batch_advice(result: BatchSizeResult) -> list[tuple[Recommendation, str | None]]:
    """Batch-size and padding advice beyond the noise, each with why its timing is not trusted."""
    found = [a for a in (batch_size_recommendation(result),) if a is not None]
    return found + remedy_recommendations(result)


def distrusted(speedup: float, own: Any, reference: Any, name: str) -> str | None:
    """Why a gain cannot be trusted: its own samples, or its reference's, are unreliable."""
    if (why := unreliable(own)) is not None:
        return f"unreliable timing: {why} (measured {speedup:.2f}×)"
    if (why := unreliable(reference)) is not None:
        return f"unreliable timing of {name}, the reference: {why} (measured {speedup:.2f}×)"
    return None


def batch_size_recommendation(result: BatchSizeResult
                              ) -> tuple[Recommendation, str | None] | None:
    """Advise the chosen workload's batch size when it beats the default 32 beyond noise."""
    workload = result.workload
    if workload not in result.choices:  # single queries have no batch size
        return None
    size = result.choices[workload].recommended_batch_size
    rows, reference = result.points_of(workload), result.default_batch_size
    if size == reference or not {size, reference} <= rows.keys():
        return None
    default, best = rows[reference].throughput_texts_per_s, rows[size].throughput_texts_per_s
    speedup, (low, high) = paired_speedup(default.samples, best.samples,
                                          paired=result.rounds is not None)
    if speedup <= 1 or low <= 1:
        return None
    why = (f"{workload}: {best.median:,.1f} texts/s at batch {size} against "
           f"{default.median:,.1f} at the default batch {reference}: {speedup:.2f}× "
           f"(95% interval {low:.2f}–{high:.2f})")
    return (Recommendation(f"Encode in batches of {size}", "batch_size", why, _gain_pct(speedup),
                           (_gain_pct(low), _gain_pct(high)),
                           "none expected: same weights, only the padding per batch changes",
                           True, "one line", "quick win",
                           f"model.encode(texts, batch_size={size})"),
            distrusted(speedup, rows[size], rows[reference], f"batch {reference}"))


def remedy_recommendations(result: BatchSizeResult) -> list[tuple[Recommendation, str | None]]:
    """For a stream: each padding remedy that beat the plain stream beyond the noise."""
    stream = result.remedy("stream")
    if result.workload != "stream" or stream is None:
        return []
    return [_from_remedy(row, stream) for row in result.remedies
            if row.name != "stream" and row.speedup_ci95 and row.speedup_ci95[0] > 1]


def _from_remedy(row: Remedy, stream: Remedy) -> tuple[Recommendation, str | None]:
    low, high = row.speedup_ci95 or (1.0, 1.0)
    speedup = row.speedup or 1.0
    why = (f"stream at batch {row.batch_size}: "
           f"{row.throughput_texts_per_s.median:,.1f} texts/s against "
           f"{stream.throughput_texts_per_s.median:,.1f} in arrival order: {speedup:.2f}× "
           f"(95% interval {low:.2f}–{high:.2f}); p95 latency per text "
           f"{row.added_latency_ms_p95 or 0:+,.0f} ms once its window is full")
    return (Recommendation(
        row.title.capitalize(), row.name, why, _gain_pct(speedup),
        (_gain_pct(low), _gain_pct(high)),
        "none expected: the same texts and weights, only which texts share a batch changes",
        True, "a few lines", "medium term", REMEDY_SNIPPETS[row.name.rstrip("0123456789_")]
        .format(size=row.batch_size, window=row.window_batches, budget=row.token_budget)),
        distrusted(speedup, row, stream, "the plain stream"))


REMEDY_SNIPPETS = {
    "sort_window": """\
# collect {window} batches of arrivals, then encode them longest first
window = sorted(pending[:{size} * {window}], key=len, reverse=True)
for start in range(0, len(window), {size}):
    model.encode(window[start:start + {size}], batch_size={size})""",
    "token_budget": """\
# close a batch before (texts x longest text) passes {budget} tokens
batch, longest = [], 0
for text, tokens in arrivals:  # tokens = len(model.tokenizer(text)["input_ids"])
    if batch and (len(batch) + 1) * max(longest, tokens) > {budget}:
        model.encode(batch, batch_size=len(batch)); batch, longest = [], 0
    batch.append(text); longest = max(longest, tokens)""",
}


def best_configuration(optimizations: OptimizationsResult) -> dict[str, Any] | None:
    """The fastest measured configuration that keeps quality, against plain `model.encode`.

    Candidates are the baseline at its own best batch size and every lossless change whose
    gain clears the noise; each already runs at its own best batch size. The reference is
    fp32 at sentence-transformers' default batch size: what a plain script runs.
    """
    criterion = optimizations.criterion
    candidates = [e for e in _measured(optimizations)
                  if _rejection(e, optimizations) is None and _lossless(e, criterion)]
    base = optimizations.experiment(optimizations.baseline)
    plain = _plain_row(optimizations)
    if plain is None or base is None or not base.is_measured:
        return None
    candidates += [base, plain]  # doing nothing new may be the fastest
    best = max(candidates, key=lambda e: e.median)
    ratio, (low, high) = paired_speedup(_samples(plain), _samples(best),
                                        paired=optimizations.rounds is not None)
    doubt = distrusted(ratio, best, plain, "plain fp32 model.encode") if best is not plain else None
    return {"name": best.name, "title": best.title, "workload": best.workload,
            "batch_size": best.batch_size, "throughput_texts_per_s": best.median,
            "speedup": best.speedup,
            "speedup_ci95": list(best.speedup_ci95) if best.speedup_ci95 else None,
            "plain_texts_per_s": plain.median, "plain_batch_size": plain.batch_size,
            "speedup_vs_plain": ratio, "speedup_vs_plain_ci95": [low, high],
            "beats_plain": low > 1 and doubt is None, "unreliable": doubt,
            "cosine_mean": best.quality.cosine_mean if best.quality else None,
            "snippet": best.snippet}


def _samples(experiment: Experiment) -> list[float]:
    stats = experiment.throughput_texts_per_s
    return stats.samples if stats else []


def _plain_row(optimizations: OptimizationsResult) -> Experiment | None:
    """fp32 at the default batch size: its own row, or the baseline when that is its best."""
    plain = optimizations.experiment("fp32_default")
    if plain is not None and plain.is_measured:
        return plain
    base = optimizations.experiment(optimizations.baseline)
    if base is not None and base.is_measured and (
            base.batch_size == optimizations.default_batch_size
            or optimizations.workload == "query"):
        return base
    return None


def not_recommended(optimizations: OptimizationsResult | None,
                    batch_size: BatchSizeResult | None = None) -> list[dict[str, Any]]:
    """List each measured change left out, with the reason, in the study's order.

    With the batch-size study: also its batch-size and padding advice whose gain cleared the
    noise but whose timing (or its reference's) is unreliable.
    """
    left = [{"name": e.name, "title": e.title, "speedup": e.speedup,
             "speedup_ci95": list(e.speedup_ci95) if e.speedup_ci95 else None, "reason": reason}
            for e in (_measured(optimizations) if optimizations else [])
            if optimizations and (reason := _rejection(e, optimizations)) is not None]
    return left + [{"name": r.experiment, "title": r.title, "speedup": 1 + r.gain_pct / 100,
                    "speedup_ci95": [1 + x / 100 for x in r.gain_ci95_pct], "reason": why}
                   for r, why in (batch_advice(batch_size) if batch_size else []) if why]


def _measured(optimizations: OptimizationsResult) -> list[Experiment]:
    """Return the measured experiments other than the baseline; skipped or failed ones are not."""
    return [e for e in optimizations.experiments
            if e.is_measured and e.family != optimizations.baseline]


def _rejection(experiment: Experiment, optimizations: OptimizationsResult) -> str | None:
    """Return why a measured change is not recommended, or None if its gain clears the noise."""
    speedup, interval = experiment.speedup, experiment.speedup_ci95
    if speedup is None:
        return "no speedup measured"
    base = optimizations.experiment(optimizations.baseline)
    if (doubt := distrusted(speedup, experiment, base,
                            f"the {base.name if base else None} baseline")):
        return doubt
    if speedup <= 1:
        return f"{'slower' if speedup < 1 else 'no faster'}: {speedup:.2f}×"
    if interval is None:
        return f"gain without an interval: {speedup:.2f}×"
    if interval[0] <= 1:
        return f"gain within noise: {speedup:.2f}× ({interval[0]:.2f}–{interval[1]:.2f})"
    if (floor := aa_floor(optimizations)) and interval[0] <= 1 + floor:
        return (f"gain not beyond the A/A spread: {speedup:.2f}× ({interval[0]:.2f}–"
                f"{interval[1]:.2f}), while fp32 against itself spread ±{100 * floor:.1f}%")
    return None


def aa_floor(result: Any) -> float:
    """The smallest change a run may claim: 0 when its A/A check passed (or predates it)."""
    aa = getattr(result, "aa", None)
    return 0.0 if aa is None or aa.passed else aa.noise_floor


def _from_experiment(experiment: Experiment, optimizations: OptimizationsResult
                     ) -> Recommendation:
    criterion = optimizations.criterion
    lossless = _lossless(experiment, criterion)
    speedup = experiment.speedup or 1.0
    low, high = experiment.speedup_ci95 or (speedup, speedup)
    return Recommendation(
        experiment.title, experiment.name, _why(experiment, optimizations),
        _gain_pct(speedup), (_gain_pct(low), _gain_pct(high)),
        _quality_cost(experiment.quality, criterion, optimizations.baseline), lossless,
        experiment.effort, priority_of(lossless, experiment.effort), experiment.snippet)


def _why(experiment: Experiment, optimizations: OptimizationsResult) -> str:
    base = optimizations.experiment(optimizations.baseline)
    base = base if base is not None and base.is_measured else None
    against = f" against {base.median:,.1f} with {base.name}" if base else ""
    low, high = experiment.speedup_ci95 or (0.0, 0.0)
    at = f" at batch {base.batch_size}" if base else ""
    return (f"{optimizations.workload}: {experiment.median:,.1f} texts/s at batch "
            f"{experiment.batch_size}{against}{at}: {experiment.speedup or 0:.2f}× "
            f"(95% interval {low:.2f}–{high:.2f})")


def _quality_cost(quality: Quality | None, criterion: Criterion, baseline: str) -> str:
    if quality is None:
        return "not measured"
    k = quality.neighbour_k
    recall = f"recall@{k} {quality.neighbour_overlap_mean:.3f}"
    if criterion.missed(quality) is None:
        return (f"keeps quality ({criterion.describe(k)}): mean cosine "
                f"{quality.cosine_mean:.5f} (min {quality.cosine_min:.5f}) to {baseline}, "
                f"{recall}")
    return (f"mean cosine {quality.cosine_mean:.4f} (min {quality.cosine_min:.3f}), "
            f"{recall}: misses {criterion.describe(k)}")


def _lossless(experiment: Experiment, criterion: Criterion) -> bool:
    return criterion.missed(experiment.quality) is None


def _gain_pct(speedup: float) -> float:
    return round(100 * (speedup - 1), 2)
