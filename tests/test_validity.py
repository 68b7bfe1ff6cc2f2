"""Measurement validity: too noisy or too few samples are marked, never recommended, never judged.

A configuration whose throughput samples spread more than `max_cv` (default 10%) or that has fewer
than `min_samples` is marked in its JSON (`validity`) and on its page, is never the basis of a
recommendation, a bottleneck or a REGRESSED verdict alone; a build that starts on a busy machine
says so on the home page.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import best_configuration, not_recommended, recommend, typed, typed_all

from profiler.analysis import bottlenecks
from profiler.analysis.compare import compare_runs
from profiler.analysis.verdicts import Sampled, judge
from profiler.config import QUICK_TIMING, Settings, load_settings
from profiler.errors import ProfilerError
from profiler.history.tracking import pooled
from profiler.measure.metrics import Metric
from profiler.measure.stats import speedup_interval, summarize
from profiler.measure.validity import MIN_SAMPLES, check, unreliable
from profiler.report.render import environment
from profiler.safety import text
from profiler.studies.batch_size import WorkloadPoint, metrics_of, pick_batch_sizes
from profiler.workloads import Padding

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
Result = dict[str, Any]
NOISY = [380.0, 420.0, 454.0, 520.0, 560.0]  # median 454 like bf16's, CV 15.7%
SLOW_AND_NOISY = [30.0, 40.0, 45.0, 35.0, 50.0, 38.0, 42.0, 33.0, 47.0, 36.0]


def find_bottlenecks(results: dict[str, Result]) -> list[bottlenecks.Bottleneck]:
    return bottlenecks.find_bottlenecks(typed_all(results))


def _load(path: str) -> Result:
    data: Result = json.loads((DATA / path).read_text())
    return data


def _row(rows: list[Result], name: str) -> Result:
    return next(r for r in rows if r.get("name") == name)


# -- the check --------------------------------------------------------------------------------

def test_steady_samples_are_valid() -> None:
    found = check([100.0, 101.0, 99.0, 100.5])
    assert found.valid and found.reason is None and found.n == 4
    assert found.cv == pytest.approx(summarize([100.0, 101.0, 99.0, 100.5]).cv)


def test_noisy_samples_say_their_cv_and_the_threshold() -> None:
    found = check(NOISY)
    assert not found.valid
    assert found.cv == pytest.approx(np.std(NOISY, ddof=1) / np.mean(NOISY))
    assert found.reason == f"too noisy: CV {100 * found.cv:.1f}% > 10%" == \
        "too noisy: CV 15.7% > 10%"


def test_too_few_samples_come_before_noise() -> None:
    assert check([100.0, 200.0], min_samples=3).reason == "too few samples: 2 < 3"
    assert check([100.0]).reason == "too few samples: 1 < 2"
    assert check([]).reason == "too few samples: 0 < 2"


def test_the_threshold_is_inclusive_and_settable() -> None:
    samples = [90.0, 110.0]  # CV 14.1%
    assert check(samples, max_cv=0.15).valid
    assert check(samples, max_cv=0.05).reason == "too noisy: CV 14.1% > 5%"


def test_figures_without_a_check_count_as_valid() -> None:
    point = typed("batch_size", _load("recommendations/batch_size.json")).points[0]
    assert unreliable(None) is None
    assert unreliable(replace(point, validity=None)) is None  # JSON from before the check
    noisy = replace(point, validity=check(NOISY))
    assert unreliable(noisy) == "too noisy: CV 15.7% > 10%"


def test_settings_carry_validated_thresholds(tmp_path: Path) -> None:
    assert (Settings().max_cv, Settings().min_samples) == (0.10, 2)
    (tmp_path / "profiler.toml").write_text("max_cv = 0.2\nmin_samples = 4\n")
    found = load_settings({}, tmp_path)
    assert (found.max_cv, found.min_samples) == (0.2, 4)
    for bad in ({"max_cv": 0}, {"max_cv": "x"}, {"min_samples": 1}, {"min_samples": 2.5}):
        with pytest.raises(ProfilerError, match=next(iter(bad))):
            Settings.from_dict(bad)


def test_a_quick_build_can_pass_the_default_minimum() -> None:
    assert QUICK_TIMING.workload_repeats >= MIN_SAMPLES == Settings().min_samples
    assert QUICK_TIMING.min_repeats >= MIN_SAMPLES


# -- recommendations and bottlenecks ----------------------------------------------------------

def _noisy_bf16() -> Result:
    """The golden experiments with bf16 faster than fp32 but noisy, as the study would write."""
    data = _load("recommendations/optimizations.json")
    base = _row(data["experiments"], "fp32")["throughput_texts_per_s"]["samples"]
    bf16 = _row(data["experiments"], "bf16")
    bf16["throughput_texts_per_s"] = summarize(NOISY).to_dict()
    bf16["speedup"] = float(np.median(NOISY) / np.median(base))
    bf16["speedup_ci95"] = list(speedup_interval(base, NOISY))
    return data


def test_a_faster_but_noisy_experiment_is_not_recommended() -> None:
    data = _noisy_bf16()
    bf16 = _row(data["experiments"], "bf16")
    assert bf16["speedup_ci95"][0] > 1  # beyond the noise by its interval alone ...
    assert "bf16" in [r.experiment for r in recommend(data)]
    bf16["validity"] = check(NOISY).to_dict()  # ... but its samples spread 15.7%
    assert "bf16" not in [r.experiment for r in recommend(data)]
    left = _row(not_recommended(data), "bf16")
    assert left["reason"] == (f"unreliable timing: too noisy: CV 15.7% > 10% "
                              f"(measured {bf16['speedup']:.2f}×)")
    best = best_configuration({**data, "quality_threshold": 0.999})
    assert best is not None and best["name"] != "bf16"


def test_a_noisy_baseline_makes_every_gain_untrusted() -> None:
    data = _load("recommendations/optimizations.json")
    base = _row(data["experiments"], "fp32")
    assert recommend(data)  # the golden run recommends several changes
    base["validity"] = check(base["throughput_texts_per_s"]["samples"], min_samples=6).to_dict()
    assert recommend(data) == []
    reasons = {r["name"]: r["reason"] for r in not_recommended(data)}
    assert reasons["bf16"].startswith(
        "unreliable timing of the fp32 baseline, the reference: too few samples: 5 < 6")


def test_a_noisy_batch_size_is_not_advised_and_says_why() -> None:
    batch = {**_load("recommendations/batch_size.json"), "workload": "bulk"}
    assert "batch_size" in [r.experiment for r in recommend(None, batch)]
    point = next(p for p in batch["points"] if p["workload"] == "bulk" and p["batch_size"] == 64)
    point["validity"] = check(point["throughput_texts_per_s"]["samples"], max_cv=0.001).to_dict()
    assert "batch_size" not in [r.experiment for r in recommend(None, batch)]
    left = _row(not_recommended(None, batch), "batch_size")
    assert left["title"] == "Encode in batches of 64"
    assert left["reason"].startswith("unreliable timing: too noisy: CV ")


def test_a_noisy_remedy_is_not_advised() -> None:
    batch = _load("recommendations/batch_size.json")  # a stream
    assert "sort_window_8" in [r.experiment for r in recommend(None, batch)]
    stream = _row(batch["remedies"], "stream")
    stream["validity"] = check(stream["throughput_texts_per_s"]["samples"], max_cv=0.001).to_dict()
    assert "sort_window_8" not in [r.experiment for r in recommend(None, batch)]
    assert "the plain stream, the reference" in _row(not_recommended(None, batch),
                                                     "sort_window_8")["reason"]


def test_a_bottleneck_is_not_claimed_from_a_noisy_figure() -> None:
    measured = _load("bottlenecks/measured.json")
    experiments = measured["optimizations"]["experiments"]

    def long_inputs() -> str | None:
        found = [b for b in find_bottlenecks(measured) if b.title == "Long inputs"]
        return found[0].change if found else None

    assert long_inputs() == _row(experiments, "max_seq_64")["title"]
    _row(experiments, "max_seq_64")["validity"] = check([100.0, 150.0, 200.0]).to_dict()
    assert long_inputs() == _row(experiments, "max_seq_128")["title"]  # the next one that holds
    _row(experiments, "max_seq_128")["validity"] = check([100.0], min_samples=3).to_dict()
    assert long_inputs() is None
    _row(experiments, "fp32")["validity"] = check([100.0, 150.0, 200.0]).to_dict()
    assert [b.study for b in find_bottlenecks(measured)] == ["batch_size"]  # no baseline to trust


def test_a_noisy_batch_size_still_counts_by_its_median_and_keeps_its_mark() -> None:
    def point(size: int, samples: list[float]) -> WorkloadPoint:
        stats = summarize(samples)
        return WorkloadPoint("bulk", size, 64, 1, stats, summarize([1.0]), 1.0, 0.0,
                             Padding(1, 1, 1.0, 0.0, 0.0), None, check(samples))

    # measured in the same rounds, sizes are comparable by their medians: a wide one is not
    # passed over for a slower one (that would swing the headline between runs); its mark stays
    steady, noisy = point(16, [100.0, 101.0, 99.0]), point(64, [120.0, 200.0, 130.0])
    assert pick_batch_sizes([steady, noisy], 0.05) == (64, 64)
    assert noisy.validity is not None and not noisy.validity.valid
    assert pick_batch_sizes([steady, point(64, [99.0, 100.0, 98.0])], 0.05) == (16, 16)


# -- verdicts ----------------------------------------------------------------------------------

def test_a_noisy_metric_that_would_regress_is_inconclusive() -> None:
    before = (100 * (1 + 0.02 * np.random.default_rng(0).standard_normal(10))).tolist()
    after = [0.6 * x for x in SLOW_AND_NOISY]  # 40% slower, CV 16.2%
    pair = (Sampled("bulk", "higher", tuple(before)), Sampled("bulk", "higher", tuple(after)))
    assert judge([pair])[0].state == "REGRESSED"
    why = check(after).reason
    assert why is not None and why.startswith("too noisy: CV ")
    verdict = judge([(pair[0], Sampled("bulk", "higher", tuple(after), unreliable=why))])[0]
    assert verdict.state == "INCONCLUSIVE"
    assert verdict.unreliable == f"after: {why}"
    assert verdict.reason == (f"INCONCLUSIVE: would be REGRESSED, but the samples are unreliable "
                              f"(after: {why}), so they cannot carry a verdict on their own")


def test_unreliable_samples_leave_an_unchanged_verdict_alone() -> None:
    same = tuple(100.0 + x for x in (-0.5, 0.0, 0.5, 0.2, -0.2, 0.1))
    old = Sampled("m", "higher", same, unreliable="too few samples: 6 < 7")
    assert judge([(old, Sampled("m", "higher", same))])[0].state == "UNCHANGED"


def _record(index: int, samples: list[float], validity: dict[str, Any] | None) -> Result:
    created = (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=index))
    metric = Metric("bulk_best_texts_per_s", "bulk at its fastest batch size", "batch_size",
                    "texts/s", "higher", tuple(samples), validity=validity)
    return {"run_id": f"2026{index:04d}", "created": created.isoformat(), "commit": None,
            "machine": {"cpu_model": "Test CPU", "logical_cores": 2, "gpu": None},
            "libraries": {}, "model": {"name": "tiny"}, "workload": "bulk",
            "request": {"quick": False, "request_size": None, "texts": 48},
            "calibration_gflops": [], "metrics": [metric.to_dict()]}


def test_a_comparison_reads_validity_from_the_metrics_of_both_runs() -> None:
    before = (100 * (1 + 0.02 * np.random.default_rng(1).standard_normal(10))).tolist()
    after = SLOW_AND_NOISY
    old, new = _record(0, before, check(before).to_dict()), _record(1, after, None)
    assert compare_runs(old, new, [], "previous").rows[0]["state"] == "REGRESSED"
    new = _record(1, after, check(after).to_dict())
    row = compare_runs(old, new, [], "previous").rows[0]
    assert row["state"] == "INCONCLUSIVE" and row["unreliable"].startswith("after: too noisy")
    assert "validity" not in _record(0, before, None)["metrics"][0]  # old records stay as they were


def test_pooled_samples_are_checked_again() -> None:
    few = [100.0, 101.0]
    record = _record(0, few, check(few, min_samples=3).to_dict())
    more = Metric("bulk_best_texts_per_s", "", "batch_size", "texts/s", "higher",
                  (100.5, 99.5, 100.2))
    validity = pooled(record, [more])["metrics"][0]["validity"]
    assert validity["valid"] and validity["n"] == 5


def test_metrics_carry_each_points_validity() -> None:
    batch = {**_load("recommendations/batch_size.json"), "workload": "bulk"}
    point = next(p for p in batch["points"] if p["workload"] == "bulk"
                 and p["batch_size"] == batch["choices"]["bulk"]["fastest_batch_size"])
    point["validity"] = check(NOISY).to_dict()
    batch["query"]["latency_ms"]["samples"] = [10.0, 12.0, 11.0]
    found = {m.name: m for m in metrics_of(typed("batch_size", batch))}
    assert found["bulk_best_texts_per_s"].validity == point["validity"]
    assert found["query_latency_ms_p95"].validity is None  # a distribution, not repeats


# -- pages -------------------------------------------------------------------------------------

def _render(template: str, **context: Any) -> str:
    run = {"summary": {}, "id": "20261122T024631Z"}
    return environment(REPO / "templates").get_template(template).render(
        run=run, title="T", charts=[], headline=None, **context)


def _strip(data: Any) -> Any:
    """The same JSON as a profiler from before the check wrote it: no validity objects."""
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k != "validity"}
    return [_strip(v) for v in data] if isinstance(data, list) else data


def test_the_golden_run_holds_what_the_check_says() -> None:
    """validity/batch_size.json is a real --no-scalene batch-size study of the tiny model on a
    shared 2-core machine, whose passes spread up to 22%: its validity objects are the check's."""
    result = _load("validity/batch_size.json")["result"]
    for row in result["points"] + result["remedies"]:
        assert row["validity"] == check(row["throughput_texts_per_s"]["samples"]).to_dict()
    query = result["query"]
    assert query["validity"] == check(query["throughput_texts_per_s"]["samples"]).to_dict()
    for workload, choice in result["choices"].items():  # the fastest of the valid sizes
        points = [p for p in result["points"] if p["workload"] == workload]
        valid = [p for p in points if p["validity"]["valid"]]
        assert valid != points
        assert choice["fastest_batch_size"] == max(
            valid, key=lambda p: p["throughput_texts_per_s"]["median"])["batch_size"]


def test_the_batch_size_page_marks_noisy_figures_and_lists_them() -> None:
    study = _load("validity/batch_size.json")
    result = study["result"]
    page = _render("batch_size.md.j2", study=study)
    bad = [p for p in result["points"] if not p["validity"]["valid"]]
    assert bad
    for p in result["points"]:
        row = next(line for line in page.splitlines()
                   if line.startswith(f"| {p['workload']} | {p['batch_size']} |"))
        mark = f"⚠ {text(p['validity']['reason'])}" if p in bad else "ok"
        assert row.endswith(f"| {mark} |")
    count = sum(not r["validity"]["valid"] for r in [*result["points"], *result["remedies"],
                                                      result["query"]])
    assert f'!!! warning "⚠ Too noisy or too few samples: {count} figures' in page
    assert (f"    - {bad[0]['workload']} at batch size {bad[0]['batch_size']}: "
            f"⚠ {text(bad[0]['validity']['reason'])}") in page
    assert "⚠ too few samples: 1 &lt; 2" in page  # 10 queries: one chunk of 25
    old = _render("batch_size.md.j2", study=_strip(study))  # JSON from before the check
    assert "⚠" not in old and "| — |" in old


def test_the_optimizations_page_marks_a_noisy_experiment_escaped() -> None:
    result = _noisy_bf16()
    bf16 = _row(result["experiments"], "bf16")
    bf16["validity"] = {**check(NOISY).to_dict(), "reason": "too noisy <b>|x|</b>"}
    lines = [line for line in _unreliable_note([e for e in result["experiments"]
                                                 if e["status"] == "measured"]).splitlines()]
    assert lines[0].startswith('!!! warning "⚠ Too noisy or too few samples: 1 figure ')
    assert f"    - {bf16['title']}: ⚠ too noisy &lt;b&gt;\\|x\\|&lt;/b&gt;" in lines


def _unreliable_note(rows: list[Result]) -> str:
    env = environment(REPO / "templates")
    source = '{% from "_macros.j2" import unreliable_note %}{{ unreliable_note(rows) }}'
    return env.from_string(source).render(rows=rows)


@pytest.mark.parametrize(("load", "busy"), [(3.5, True), (1.5, False), (None, False)])
def test_the_home_page_says_when_the_build_started_on_a_busy_machine(load: float | None,
                                                                    busy: bool) -> None:
    system = {"logical_cores": 2, "load_avg_1m": load, "busy": busy}
    env = environment(REPO / "templates")
    source = '{% from "_dashboard.j2" import dashboard %}{{ dashboard(run, s, "bulk") }}'
    page = env.from_string(source).render(run={"system": system, "comparison": {
        "comparisons": []}}, s={"studies": {}})
    assert ("⚠ Busy machine: load average 3.50 on 2 logical cores" in page) == busy
    old = env.from_string(source).render(run={"system": {"logical_cores": 2}, "comparison": {
        "comparisons": []}}, s={"studies": {}})
    assert "Busy machine" not in old  # system.json from before the check


def test_system_info_records_the_load_at_the_start() -> None:
    from profiler.measure.system import system_info

    info = system_info("cpu")
    assert isinstance(info["load_avg_1m"], float) and info["load_avg_1m"] >= 0
    assert info["busy"] == (info["load_avg_1m"] > info["logical_cores"])


def test_a_figure_from_rounds_is_judged_by_its_paired_interval() -> None:
    from profiler.measure.validity import check_paired

    base = [100.0, 80.0, 120.0, 90.0, 110.0]  # the machine drifts from round to round
    steady = check_paired(base, [1.2 * x for x in base])  # ... and the speedup holds through it
    assert steady.valid and steady.half_width is not None and steady.half_width < 1e-9
    assert check(base).reason is not None  # the raw rates alone look too noisy
    noisy = check_paired(base, [130.0, 70.0, 150.0, 60.0, 140.0])
    assert not noisy.valid and noisy.reason is not None
    assert noisy.reason.startswith("too noisy: 95% interval ±")
    few = check_paired(base[:1], base[:1])
    assert not few.valid and few.reason == "too few rounds: 1 < 2"
