"""Turn measured optimizations into ranked recommendations, each with its gain, cost and snippet.

A change is recommended only when it was measured and its gain is outside the noise: the low end
of the speedup's 95% bootstrap interval is above 1. It is lossless when its mean cosine to the
baseline's embeddings reaches the study's quality threshold (a missing quality counts as lossy).
Priority (see priority_of): quick win = lossless and one line; medium term = lossless with a few
lines or an export step, or lossy with one line; long term = everything else (a compile step, a
lossy export). Recommendations rank by priority, then by gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from profiler.measure.stats import speedup_interval

Result = dict[str, Any]

PRIORITIES = ("quick win", "medium term", "long term")
ORDER = {name: rank for rank, name in enumerate(PRIORITIES)}
LOSSLESS_PRIORITY = {"one line": "quick win", "a few lines": "medium term",
                     "an export step": "medium term"}
LOSSY_PRIORITY = {"one line": "medium term"}
DEFAULT_BATCH_SIZE = 32  # sentence-transformers' encode() default


@dataclass(frozen=True)
class Recommendation:
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
        data = asdict(self)
        data["gain_ci95_pct"] = list(self.gain_ci95_pct)
        return data


def priority_of(lossless: bool, effort: str) -> str:
    """Map whether a change keeps quality, and how much work it is, to a priority."""
    return (LOSSLESS_PRIORITY if lossless else LOSSY_PRIORITY).get(effort, "long term")


def recommend(optimizations: Result, batch_size: Result | None = None) -> list[Recommendation]:
    """Recommend each measured change whose gain clears the noise; rank by priority, then gain."""
    found = [_from_experiment(e, optimizations) for e in _measured(optimizations)
             if _rejection(e) is None]
    if batch_size is not None and (batch := batch_size_recommendation(batch_size)) is not None:
        found.append(batch)
    return sorted(found, key=lambda r: (ORDER[r.priority], -r.gain_pct))


def batch_size_recommendation(result: Result) -> Recommendation | None:
    """Recommend the study's batch size when it beats the default 32 outside the noise."""
    size = result["recommended_batch_size"]
    points = {p["batch_size"]: p["throughput_texts_per_s"] for p in result["points"]}
    if size == DEFAULT_BATCH_SIZE or not {size, DEFAULT_BATCH_SIZE} <= points.keys():
        return None
    default, best = points[DEFAULT_BATCH_SIZE], points[size]
    speedup = best["median"] / default["median"]
    low, high = speedup_interval(default["samples"], best["samples"])
    if speedup <= 1 or low <= 1:
        return None
    why = (f"{best['median']:,.1f} texts/s at batch {size} against {default['median']:,.1f} at "
           f"the default batch {DEFAULT_BATCH_SIZE}: {speedup:.2f}× "
           f"(95% interval {low:.2f}–{high:.2f})")
    return Recommendation(f"Encode in batches of {size}", "batch_size", why, _gain_pct(speedup),
                          (_gain_pct(low), _gain_pct(high)),
                          "none expected: same weights, only the padding per batch changes",
                          True, "one line", "quick win",
                          f"model.encode(texts, batch_size={size})")


def best_configuration(optimizations: Result) -> dict[str, Any] | None:
    """Return the fastest lossless change whose gain clears the noise, or None."""
    threshold = optimizations["quality_threshold"]
    lossless = [e for e in _measured(optimizations)
                if _rejection(e) is None and _lossless(e, threshold)]
    if not lossless:
        return None
    best = max(lossless, key=lambda e: e["speedup"])
    return {"name": best["name"], "title": best["title"], "speedup": best["speedup"],
            "speedup_ci95": best["speedup_ci95"], "cosine_mean": best["quality"]["cosine_mean"],
            "snippet": best["snippet"]}


def not_recommended(optimizations: Result) -> list[dict[str, Any]]:
    """List each measured change left out, with the reason, in the study's order."""
    return [{"name": e["name"], "title": e["title"], "speedup": e["speedup"],
             "speedup_ci95": e["speedup_ci95"], "reason": reason}
            for e in _measured(optimizations) if (reason := _rejection(e)) is not None]


def _measured(optimizations: Result) -> list[Result]:
    """Return the measured experiments other than the baseline; skipped or failed ones are not."""
    return [e for e in optimizations["experiments"]
            if e["status"] == "measured" and e["name"] != optimizations["baseline"]]


def _rejection(experiment: Result) -> str | None:
    """Return why a measured change is not recommended, or None if its gain clears the noise."""
    speedup, interval = experiment["speedup"], experiment["speedup_ci95"]
    if speedup is None:
        return "no speedup measured"
    if speedup <= 1:
        return f"{'slower' if speedup < 1 else 'no faster'}: {speedup:.2f}×"
    if interval is None:
        return f"gain without an interval: {speedup:.2f}×"
    if interval[0] <= 1:
        return f"gain within noise: {speedup:.2f}× ({interval[0]:.2f}–{interval[1]:.2f})"
    return None


def _from_experiment(experiment: Result, optimizations: Result) -> Recommendation:
    threshold = optimizations["quality_threshold"]
    lossless = _lossless(experiment, threshold)
    low, high = experiment["speedup_ci95"]
    return Recommendation(
        experiment["title"], experiment["name"], _why(experiment, optimizations),
        _gain_pct(experiment["speedup"]), (_gain_pct(low), _gain_pct(high)),
        _quality_cost(experiment["quality"], threshold, optimizations["baseline"]), lossless,
        experiment["effort"], priority_of(lossless, experiment["effort"]), experiment["snippet"])


def _why(experiment: Result, optimizations: Result) -> str:
    base = next((e for e in optimizations["experiments"] if e["status"] == "measured"
                 and e["name"] == optimizations["baseline"]), None)
    against = f" against {_median(base):,.1f} with {base['name']}" if base else ""
    low, high = experiment["speedup_ci95"]
    return (f"{_median(experiment):,.1f} texts/s{against} at batch {optimizations['batch_size']}: "
            f"{experiment['speedup']:.2f}× (95% interval {low:.2f}–{high:.2f})")


def _quality_cost(quality: Result | None, threshold: float, baseline: str) -> str:
    if quality is None:
        return "not measured"
    overlap = f"{quality['neighbour_k']}-NN overlap {100 * quality['neighbour_overlap_mean']:.1f}%"
    if quality["cosine_mean"] >= threshold:
        return (f"within the {threshold:g} threshold: mean cosine {quality['cosine_mean']:.5f} "
                f"(min {quality['cosine_min']:.4f}) to {baseline}, {overlap}")
    return (f"mean cosine {quality['cosine_mean']:.4f} (min {quality['cosine_min']:.3f}), "
            f"{overlap}: below the {threshold:g} threshold")


def _lossless(experiment: Result, threshold: float) -> bool:
    quality = experiment["quality"]
    return quality is not None and quality["cosine_mean"] >= threshold


def _median(experiment: Result) -> float:
    return float(experiment["throughput_texts_per_s"]["median"])


def _gain_pct(speedup: float) -> float:
    return round(100 * (speedup - 1), 2)
