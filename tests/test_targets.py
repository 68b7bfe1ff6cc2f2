"""Service targets held against a run's headline figures."""

from __future__ import annotations

import pytest

from profiler.analysis.targets import DEFAULT_TARGETS, check_targets
from profiler.config import Settings
from profiler.errors import ProfilerError

BULK = {"workload": "bulk", "best_throughput_texts_per_s": 620.0, "fastest_batch_size": 64,
        "recommended_batch_size": 32, "recommended_latency_ms_p95": 2400.0,
        "request_texts": 1200, "query_latency_ms_p95": 9.0}
MEMORY = {"largest_peak_rss_mb": 2300.0, "largest_batch_size": 256}


def by_name(targets: list) -> dict:  # type: ignore[type-arg]
    return {t.name: t for t in targets}


def test_defaults_are_the_old_reports_and_each_says_its_workload() -> None:
    assert DEFAULT_TARGETS == {"throughput_texts_per_s": 500.0,
                               "latency_ms_per_text_p95": 1.0, "peak_memory_mb": 2048.0}
    found = by_name(check_targets({"batch_size": BULK, "memory": MEMORY}, {}))
    assert found["throughput_texts_per_s"].passed is True
    latency = found["latency_ms_per_text_p95"]  # a bulk call is the whole request
    assert latency.measured == pytest.approx(2400.0 / 1200) and latency.passed is False
    assert found["peak_memory_mb"].passed is False and found["peak_memory_mb"].workload == "bulk"


def test_limits_from_settings_and_other_workloads() -> None:
    stream = {**BULK, "workload": "stream"}
    found = by_name(check_targets({"batch_size": stream}, {"latency_ms_per_text_p95": 100.0}))
    assert found["latency_ms_per_text_p95"].measured == pytest.approx(2400.0 / 32)
    assert found["latency_ms_per_text_p95"].passed is True
    assert found["peak_memory_mb"].passed is None  # the memory study did not run
    query = {**BULK, "workload": "query", "fastest_batch_size": None}
    latency = by_name(check_targets({"batch_size": query}, {}))["latency_ms_per_text_p95"]
    assert latency.measured == 9.0 and latency.workload == "query"


@pytest.mark.parametrize(("targets", "message"), [
    ({"speed": 3.0}, "unknown target 'speed'"),
    ({"peak_memory_mb": 0}, "targets.peak_memory_mb must be a number > 0"),
    ("fast", "targets must be a table")])
def test_bad_targets_are_refused_by_name(targets: object, message: str) -> None:
    with pytest.raises(ProfilerError, match=message):
        Settings(targets=targets)  # type: ignore[arg-type]
