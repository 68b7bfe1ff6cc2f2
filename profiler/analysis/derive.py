"""Everything derived from a run's measurements, in one pure step that build and render share.

Measurement writes only measurements (each study's `result`). `derive` computes headlines,
targets, bottlenecks, context and recommendations from them and the run's settings, so
`profiler render` on an older run shows today's analysis of what it measured.
"""

from __future__ import annotations

from typing import Any

from profiler.analysis.bottlenecks import find_bottlenecks, find_context
from profiler.analysis.recommendations import best_configuration, not_recommended, recommend
from profiler.analysis.targets import check_targets
from profiler.studies import STUDIES

DEFAULT_MEMORY_BUDGET_MB = 2048.0
DERIVED = ("studies", "memory_budget_mb", "targets", "bottlenecks", "context",
           "recommendations", "not_recommended")  # the summary's fields that derive computes


def derive(results: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Headlines, targets, bottlenecks, context and recommendations of one run's typed results
    (each study's RESULT, as `Study.read_from` reads it)."""
    budget = float(settings.get("memory_budget_mb", DEFAULT_MEMORY_BUDGET_MB))
    headlines = {name: STUDIES[name].headline(result) for name, result in results.items()}
    optimizations, batch = results.get("optimizations"), results.get("batch_size")
    if optimizations is not None:  # the fastest change that keeps quality, against plain fp32
        headlines["optimizations"]["best"] = best_configuration(optimizations)
    return {
        "studies": headlines,
        "memory_budget_mb": budget,
        "targets": [t.to_dict() for t in check_targets(headlines, settings.get("targets") or {})],
        "bottlenecks": [b.to_dict() for b in find_bottlenecks(results, budget)],
        "context": [c.to_dict() for c in find_context(results, budget)],
        "recommendations": [r.to_dict() for r in recommend(optimizations, batch)],
        "not_recommended": not_recommended(optimizations, batch),
    }
