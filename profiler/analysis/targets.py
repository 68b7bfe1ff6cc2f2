"""Service targets: measured figures held against the limits a service must meet.

The defaults are the old in-house report's: throughput above 500 texts/s, p95 latency per text
under 1.0 ms, peak memory under 2 GB. Each target says which workload its figure describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.storage import Record

DEFAULT_TARGETS = {"throughput_texts_per_s": 500.0, "latency_ms_per_text_p95": 1.0,
                   "peak_memory_mb": 2048.0}
TITLES = {"throughput_texts_per_s": ("Throughput", "texts/s", "at least"),
          "latency_ms_per_text_p95": ("p95 latency per text", "ms", "at most"),
          "peak_memory_mb": ("Peak memory", "MB", "at most")}


@dataclass(frozen=True)
class Target(Record):
    """One target: its limit, the measured figure, pass or fail, and what was measured."""

    name: str
    title: str
    unit: str
    bound: str  # "at least" or "at most"
    limit: float
    measured: float | None
    passed: bool | None  # None: the study that measures it did not run
    workload: str
    evidence: str


def check_targets(headlines: dict[str, dict[str, Any]],
                  limits: dict[str, float]) -> list[Target]:
    """Hold the run's headline figures against `limits` (the defaults where one is unset)."""
    merged = {**DEFAULT_TARGETS, **limits}
    figures = {"throughput_texts_per_s": throughput(headlines.get("batch_size")),
               "latency_ms_per_text_p95": latency_per_text(headlines.get("batch_size")),
               "peak_memory_mb": peak_memory(headlines.get("memory"))}
    found = []
    for name, (title, unit, bound) in TITLES.items():
        measured, workload, evidence = figures[name]
        limit = float(merged[name])
        passed = None if measured is None else (
            measured >= limit if bound == "at least" else measured <= limit)
        found.append(Target(name, title, unit, bound, limit, measured, passed, workload,
                            evidence))
    return found


Figure = tuple[float | None, str, str]


def throughput(batch: dict[str, Any] | None) -> Figure:
    """The chosen workload's best throughput."""
    if not batch:
        return None, "bulk", "the batch-size study did not run"
    workload = batch["workload"]
    where = ("one text per call" if workload == "query"
             else f"at batch size {batch['fastest_batch_size']}")
    return batch["best_throughput_texts_per_s"], workload, where


def latency_per_text(batch: dict[str, Any] | None) -> Figure:
    """p95 of a call's latency divided by the texts it encodes, for the chosen workload."""
    if not batch:
        return None, "bulk", "the batch-size study did not run"
    workload = batch["workload"]
    if workload == "query":
        return batch["query_latency_ms_p95"], workload, "p95 of single-text calls"
    texts = batch["request_texts"] if workload == "bulk" else batch["recommended_batch_size"]
    what = "request" if workload == "bulk" else "batch"
    return (batch["recommended_latency_ms_p95"] / texts, workload,
            f"p95 call latency at batch size {batch['recommended_batch_size']} / {texts} texts "
            f"per {what}")


def peak_memory(memory: dict[str, Any] | None) -> Figure:
    """Peak resident memory at the largest batch size, model included."""
    if not memory:
        return None, "bulk", "the memory study did not run"
    return (memory["largest_peak_rss_mb"], "bulk",
            f"peak RSS at batch size {memory['largest_batch_size']}, model included")
