"""Bottleneck rules on golden JSON: what each change removed from the chosen workload's time.

The inputs under tests/data/bottlenecks/ are shaped like a run's study results, with five raw
throughput samples per configuration (about 3% apart, as on a quiet CPU), so every interval
below is a real bootstrap over those samples:

- measured.json: a stream workload over a mixed-length corpus (2,000 texts, 59 tokens on
  average); bulk sorts by length and pads little, the stream in arrival order pads a lot.
- batch_size_equal_lengths.json: a corpus of near-equal texts, where the stream and the
  length-sorted bulk call run at the same speed within the noise.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import typed, typed_all

from profiler.analysis import bottlenecks
from profiler.analysis.bottlenecks import Bottleneck, Context, severity_of
from profiler.measure.stats import speedup_interval, summarize
from profiler.studies.batch_size import WorkloadPoint, pick_batch_sizes
from profiler.workloads import Padding

GOLDEN = Path(__file__).parent / "data" / "bottlenecks"
Result = dict[str, Any]


def find_bottlenecks(results: dict[str, Result], budget_mb: float = 2048.0) -> list[Bottleneck]:
    """The rules on results as a run's reader gives them."""
    return bottlenecks.find_bottlenecks(typed_all(results), budget_mb)


def find_context(results: dict[str, Result], budget_mb: float = 2048.0) -> list[Context]:
    return bottlenecks.find_context(typed_all(results), budget_mb)


def padding(result: Result) -> Bottleneck | None:
    return bottlenecks.padding(typed("batch_size", result))


def batch_size_choice(result: Result) -> Bottleneck | None:
    return bottlenecks.batch_size_choice(typed("batch_size", result))


def _load(name: str) -> Result:
    data: Result = json.loads((GOLDEN / name).read_text())
    return data


def _measured() -> Result:
    return _load("measured.json")


def _mixed(workload: str = "stream") -> Result:
    return {**_measured()["batch_size"], "workload": workload}


def _equal() -> Result:
    return _load("batch_size_equal_lengths.json")


def _experiment(measured: Result, name: str) -> Result:
    return next(e for e in measured["optimizations"]["experiments"] if e["name"] == name)


def _titles(measured: Result, budget_mb: float = 2048.0) -> list[str]:
    return [b.title for b in find_bottlenecks(measured, budget_mb)]


def _stats(data: Any) -> Iterator[Result]:
    """Every Stats-like dict (one with raw samples) anywhere in a fixture."""
    if isinstance(data, dict):
        if isinstance(data.get("samples"), list):
            yield data
        for value in data.values():
            yield from _stats(value)
    elif isinstance(data, list):
        for value in data:
            yield from _stats(value)


def _workload_point(point: Result) -> WorkloadPoint:
    """Rebuild the study's WorkloadPoint from a fixture point (only throughput matters here)."""
    stats, pad = summarize(point["throughput_texts_per_s"]["samples"]), point["padding"]
    return WorkloadPoint(point["workload"], point["batch_size"], point["texts"],
                         point["calls_per_pass"], stats, summarize([1.0]),
                         1000 / stats.median, 0.0,
                         Padding(pad["real_tokens"], pad["padded_tokens"], pad["real_share"],
                                 0.0, 0.0), None)


def test_golden_run_gives_the_expected_ranked_table_and_context() -> None:
    """expected.json was written from the code, then each entry checked by hand:

    - Padding: stream 336.0 vs bulk 570.0 texts/s at the stream's recommended batch 64 ->
      1 - 336/570 = 41.05%, high; real shares 118,400/257,400 = 46.0% and /126,000 = 94.0%;
      the change names sort_window_8, the only remedy whose interval (1.46-1.57) clears 1.
    - PyTorch eager backend: onnx_o2 1.0774 -> 7.18%, low (onnx 1.0476 is less, onnx_int8 failed);
      it keeps quality (cosine 0.99998), so it ranks before the two that do not:
    - Long inputs: max_seq_64, speedup 1.4821 -> 32.53% (interval 1.4186-1.5329 -> 29.51-34.76),
      cosine 0.962 below the 0.999 threshold (max_seq_128's 0.9978 too): costs quality.
    - fp32 weights: torch_int8 1.25 -> 20.0%, medium (bf16 is slower, fp16 skipped), cosine
      0.9912: costs quality.
    - Not ranked: batch size 32 on the stream (318 vs 336, interval 0.98-1.14 holds 1); every
      threads_N is slower; memory peaks at 1,209.6 MB < 2,048; the leak check says no leak.
    - Context: stage shares (0.917 + 0.935) / 2 = 92.6% forward, 5.5% tokenize, 1.3% pooling;
      1,209.6 / 2,048 = 59.1% of the budget; query p50/p99/max and the 6.8 s cold start.
    """
    measured, expected = _measured(), _load("expected.json")
    assert [b.to_dict() for b in find_bottlenecks(measured)] == expected["bottlenecks"]
    assert [c.to_dict() for c in find_context(measured)] == expected["context"]


@pytest.mark.parametrize("name", ["measured.json", "batch_size_equal_lengths.json"])
def test_the_fixtures_hold_what_the_studies_would_write(name: str) -> None:
    data = _load(name)
    for stats in _stats(data):
        assert stats["median"] == np.median(stats["samples"])
    result = data.get("batch_size", data)
    for workload, choice in result["choices"].items():
        points = [_workload_point(p) for p in result["points"] if p["workload"] == workload]
        assert pick_batch_sizes(points, result["recommend_within"]) == (
            choice["fastest_batch_size"], choice["recommended_batch_size"])
    _assert_speedups(result["remedies"], result["remedies"][0])
    if "optimizations" in data:
        experiments = data["optimizations"]["experiments"]
        _assert_speedups([e for e in experiments if e["status"] == "measured"], experiments[0])


def _assert_speedups(rows: list[Result], base: Result) -> None:
    """Speedups and intervals are against the base row's samples, rounded to 4 places."""
    base_samples = base["throughput_texts_per_s"]["samples"]
    for row in rows:
        samples = row["throughput_texts_per_s"]["samples"]
        assert row["speedup"] == pytest.approx(np.median(samples) / np.median(base_samples),
                                               abs=1e-4)
        assert row["speedup_ci95"] == pytest.approx(
            list(speedup_interval(base_samples, samples)), abs=1e-4)


def test_padding_fires_on_a_mixed_length_stream() -> None:
    found = padding(_mixed())
    assert found is not None and (found.severity, found.workload) == ("high", "stream")
    assert found.impact_pct == pytest.approx(100 * (1 - 336.0 / 570.0), abs=0.01)
    assert found.impact_ci95_pct is not None and 0 < found.impact_ci95_pct[0] < found.impact_pct
    assert found.change.startswith("sort each window of 8 batches by length")


def test_padding_does_not_fire_when_texts_have_equal_lengths() -> None:
    equal = _equal()
    at = {(p["workload"], p["batch_size"]): p["throughput_texts_per_s"]["median"]
          for p in equal["points"]}
    assert at[("stream", 32)] < at[("bulk", 32)]  # slower by its median, but within the noise
    assert padding(equal) is None
    assert find_bottlenecks({"batch_size": equal}) == []


@pytest.mark.parametrize("workload", ["bulk", "query"])
def test_padding_is_never_a_bottleneck_of_bulk_or_query(workload: str) -> None:
    assert padding(_mixed(workload)) is None
    measured = _measured()
    measured["batch_size"]["workload"] = workload
    assert "Padding in arrival-order batches" not in _titles(measured)


def test_padding_without_a_remedy_beyond_the_noise_names_sorting() -> None:
    mixed = _mixed()
    for row in mixed["remedies"]:
        row["speedup_ci95"] = [0.97, 1.6]
    found = padding(mixed)
    assert found is not None and found.change == "sort texts by length before batching them"


def test_the_batch_size_bottleneck_is_measured_on_the_chosen_workload() -> None:
    assert batch_size_choice(_mixed("stream")) is None  # 318 vs 336: the interval holds 1
    assert batch_size_choice(_mixed("query")) is None
    bulk = batch_size_choice(_mixed("bulk"))
    assert bulk is not None
    assert (bulk.workload, bulk.change, bulk.severity) == ("bulk", "batch_size=64", "low")
    assert bulk.impact_pct == pytest.approx(100 * (1 - 520.0 / 570.0), abs=0.01)  # 8.77%
    assert bulk.evidence == "bulk: 520.0 texts/s at batch 32, 570.0 at batch 64"


def test_no_batch_size_bottleneck_when_32_is_already_recommended() -> None:
    equal = _equal()
    assert equal["choices"]["stream"]["recommended_batch_size"] == 32
    assert batch_size_choice(equal) is None


def test_impact_is_the_share_of_time_the_change_removed() -> None:
    measured = _measured()
    _experiment(measured, "max_seq_64").update(speedup=2.0, speedup_ci95=[1.25, 4.0])
    long = next(b for b in find_bottlenecks(measured) if b.title == "Long inputs")
    assert (long.impact_pct, long.impact_ci95_pct) == (50.0, [20.0, 75.0])


@pytest.mark.parametrize("low", [1.0, 0.98])
def test_a_saving_within_the_noise_is_not_ranked(low: float) -> None:
    measured = _measured()
    for name in ("max_seq_64", "max_seq_128"):
        _experiment(measured, name)["speedup_ci95"] = [low, 1.9]
    assert "Long inputs" not in _titles(measured)


def test_a_noisy_faster_change_does_not_hide_a_clear_one() -> None:
    measured = _measured()
    _experiment(measured, "max_seq_64")["speedup_ci95"] = [0.98, 1.9]
    long = next((b for b in find_bottlenecks(measured) if b.title == "Long inputs"), None)
    assert long is not None and long.change == "max_seq_length 128"  # 1.17×, 1.116–1.205


def test_no_baseline_means_no_experiment_bottleneck() -> None:
    measured = _measured()
    _experiment(measured, "fp32").update(status="failed", speedup=None, speedup_ci95=None)
    assert [b.study for b in find_bottlenecks(measured)] == ["batch_size"]


def test_memory_over_budget_is_high_whatever_its_size_and_severity_ranks_first() -> None:
    measured = _measured()
    assert "Peak memory over budget" not in _titles(measured, 1209.6)  # at the budget: fine
    found = find_bottlenecks(measured, 1100.0)
    over = next(b for b in found if b.study == "memory")
    assert (over.severity, over.impact_pct) == ("high", 9.96)  # 109.6 MB over 1,100 MB
    assert over.evidence == "batch 128 peaks at 1,210 MB against a budget of 1,100 MB"
    # quality-keeping first (high 41.05, 9.96; low 7.18), then those that cost quality (high
    # 32.53, medium 20.0)
    assert [b.title for b in found] == [
        "Padding in arrival-order batches", "Peak memory over budget", "PyTorch eager backend",
        "Long inputs", "fp32 weights"]
    assert [b.keeps_quality for b in found] == [True, True, True, False, False]


def test_a_leak_is_high_whatever_its_size_and_ranks_by_impact() -> None:
    measured = _measured()
    leak = measured["leak"]
    measured["leak"] = {**leak, "leak": True, "rss_mb": [990.0, 1000.0],
                        "fit": {**leak["fit"], "slope": 0.05, "slope_ci95": [0.02, 0.08]},
                        "growth_mb_per_1000_iterations": 50.0}
    found = find_bottlenecks(measured)
    leak = next(b for b in found if b.study == "leak")
    assert leak.severity == "high" and leak.impact_pct == pytest.approx(5.0)
    assert "0.050 MB per iteration" in leak.evidence
    keeping = [b for b in found if b.keeps_quality]
    highs = [b for b in keeping if b.severity == "high"]
    assert highs[-1] is leak  # high, but the smallest high impact that keeps quality
    assert keeping[len(highs)].severity == "low"
    assert all(not b.keeps_quality for b in found[len(keeping):])


@pytest.mark.parametrize(("impact", "severity"), [(30.0, "high"), (29.99, "medium"),
                                                  (10.0, "medium"), (9.99, "low"), (0.0, "low")])
def test_severity_thresholds(impact: float, severity: str) -> None:
    assert severity_of(impact) == severity


@pytest.mark.parametrize(("study", "context", "ranked"), [
    ("stages", ["The forward pass is the work"], []),
    ("memory", ["Memory grows with batch size"], []),
    ("text_length", ["Longer texts cost more per text"], []),
    ("batch_size", ["Padding", "Query latency"], ["Padding in arrival-order batches"]),
])
def test_facts_no_change_removes_are_context_not_bottlenecks(study: str, context: list[str],
                                                             ranked: list[str]) -> None:
    only = {study: _measured()[study]}
    assert [c.title for c in find_context(only)] == context
    assert _titles(only) == ranked
    assert find_bottlenecks({}) == [] and find_context({}) == []


def test_context_without_a_cold_start_or_a_second_length() -> None:
    measured = copy.deepcopy(_measured())
    measured["batch_size"]["query"]["cold_start"] = None
    measured["text_length"]["points"] = measured["text_length"]["points"][:1]
    facts = {c.title: c.evidence for c in find_context(measured)}
    assert facts["Query latency"] == "one text per call: p50 9.8 ms, p99 21.7 ms, max 48.3 ms"
    assert "Longer texts cost more per text" not in facts
