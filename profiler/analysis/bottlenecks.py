"""Rank bottlenecks from a run's measurements: each rule reads one study's result.

Severity comes from the measured impact alone (see SEVERITY): high at 30% or more, medium at
10% or more, low below. A leak is always high. The methodology page states the same rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

SEVERITY = (("high", 30.0), ("medium", 10.0), ("low", 0.0))
ORDER = {name: rank for rank, (name, _) in enumerate(SEVERITY)}


@dataclass(frozen=True)
class Bottleneck:
    """One measured cost, how big it is and the figures it rests on."""

    title: str
    study: str
    impact_pct: float
    severity: str
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        """Return the bottleneck as plain data."""
        return asdict(self)


def severity_of(impact_pct: float) -> str:
    """Map a measured impact in percent to high, medium or low."""
    return next((name for name, floor in SEVERITY if impact_pct >= floor), "low")


def _found(title: str, study: str, impact: float, evidence: str,
           severity: str | None = None) -> Bottleneck | None:
    if impact <= 0:  # nothing lost: not a bottleneck (e.g. long texts no slower, within noise)
        return None
    return Bottleneck(title, study, round(impact, 2), severity or severity_of(impact), evidence)


def _median(stats: dict[str, Any]) -> float:
    return float(stats["median"])


def batch_size_choice(result: dict[str, Any]) -> Bottleneck | None:
    """Throughput lost at the slowest batch size tested, against the fastest."""
    points = result["points"]
    if len(points) < 2:
        return None
    best = max(points, key=lambda p: _median(p["throughput_texts_per_s"]))
    worst = min(points, key=lambda p: _median(p["throughput_texts_per_s"]))
    hi, lo = _median(best["throughput_texts_per_s"]), _median(worst["throughput_texts_per_s"])
    return _found(f"Batch size {worst['batch_size']} loses throughput", "batch_size",
                  100 * (1 - lo / hi),
                  f"batch {worst['batch_size']}: {lo:,.1f} texts/s against {hi:,.1f} at "
                  f"batch {best['batch_size']}")


def latency_tail(result: dict[str, Any]) -> Bottleneck | None:
    """How far p99 batch latency sits above p50 at the recommended batch size."""
    point = next(p for p in result["points"]
                 if p["batch_size"] == result["recommended_batch_size"])
    p50, p99 = point["batch_latency_ms"]["p50"], point["batch_latency_ms"]["p99"]
    return _found("Latency tail at the recommended batch size", "batch_size",
                  100 * (p99 / p50 - 1),
                  f"batch {point['batch_size']}: p99 {p99:,.1f} ms against p50 {p50:,.1f} ms")


def long_texts(result: dict[str, Any]) -> Bottleneck | None:
    """Throughput lost from the shortest to the longest text length tested."""
    points = sorted(result["points"], key=lambda p: p["target_chars"])
    if len(points) < 2:
        return None
    short, long = points[0], points[-1]
    fast, slow = (_median(p["throughput_texts_per_s"]) for p in (short, long))
    return _found("Long texts cost more per text", "text_length", 100 * (1 - slow / fast),
                  f"{slow:,.1f} texts/s at {long['target_chars']:,} chars against {fast:,.1f} at "
                  f"{short['target_chars']:,} chars ({long['tokens_per_text_mean']:,.0f} vs "
                  f"{short['tokens_per_text_mean']:,.0f} tokens per text)")


def memory_per_text(result: dict[str, Any]) -> Bottleneck | None:
    """Peak memory the largest batch adds, relative to the loaded model's RSS."""
    largest = max(result["points"], key=lambda p: p["batch_size"])
    loaded = largest["rss_after_load_mb"]
    slope = result["fit"]["slope"] if result.get("fit") else None
    per_text = f"; {slope:,.2f} MB per extra text in a batch" if slope is not None else ""
    return _found("Activation memory grows with batch size", "memory",
                  100 * largest["peak_increase_mb"] / loaded,
                  f"batch {largest['batch_size']} peaks {largest['peak_increase_mb']:,.0f} MB "
                  f"above the loaded process's {loaded:,.0f} MB{per_text}")


def leak(result: dict[str, Any]) -> Bottleneck | None:
    """A steady-state RSS slope whose interval clears the threshold: always high."""
    if not result["leak"]:
        return None
    fit = result["fit"]
    last = result["rss_mb"][-1]
    growth = 100 * result["growth_mb_per_1000_iterations"] / last
    return _found("Memory leak", "leak", growth,
                  f"RSS grows {fit['slope']:,.3f} MB per iteration "
                  f"(95% interval {fit['slope_ci95'][0]:,.3f} to {fit['slope_ci95'][1]:,.3f}); "
                  f"impact is the growth over 1,000 iterations against {last:,.0f} MB", "high")


def stage_shares(result: dict[str, Any]) -> list[Bottleneck]:
    """The forward pass's and tokenization's share of encoding time, averaged over batch sizes."""
    points = result["points"]
    found: list[Bottleneck | None] = []
    for stage, title in (("forward", "Forward pass dominates encoding time"),
                         ("tokenize", "Tokenization time")):
        shares = [100 * p["stage_share"][stage] for p in points]
        mean = sum(shares) / len(shares)
        found.append(_found(title, "stages", mean,
                            f"{stage}: {min(shares):.1f}–{max(shares):.1f}% of encoding time "
                            f"across batch sizes {points[0]['batch_size']}–"
                            f"{points[-1]['batch_size']}"))
    return [b for b in found if b is not None]


Rule = Callable[[dict[str, Any]], Bottleneck | None]
RULES: dict[str, tuple[Rule, ...]] = {
    "batch_size": (batch_size_choice, latency_tail),
    "text_length": (long_texts,),
    "memory": (memory_per_text,),
    "leak": (leak,),
}


def find_bottlenecks(results: dict[str, dict[str, Any]]) -> list[Bottleneck]:
    """Apply every rule to the studies present; rank by severity, then impact."""
    found: list[Bottleneck] = []
    for study, rules in RULES.items():
        if study in results:
            found += [b for rule in rules if (b := rule(results[study])) is not None]
    if "stages" in results:
        found += stage_shares(results["stages"])
    return sorted(found, key=lambda b: (ORDER[b.severity], -b.impact_pct))
