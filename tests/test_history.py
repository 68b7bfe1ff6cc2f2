"""Run history, comparisons and the regression gate, on synthetic run records (no model)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_cli

from profiler.analysis.compare import compare_runs, history_noise
from profiler.errors import ProfilerError
from profiler.history.store import (
    append_run,
    fingerprint,
    incomparable,
    load_history,
    save_baseline,
    thin,
)
from profiler.storage import write_json

MACHINE = {"cpu_model": "Test CPU", "logical_cores": 2, "ram_gb": 24.0, "gpu": None,
           "device": "cpu"}
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def record(index: int, throughput: float = 100.0, cv: float = 0.03, n: int = 5,
           seed: int | None = None, calibration: float = 50.0, **changes: Any) -> dict[str, Any]:
    """A run record whose throughput samples are drawn around `throughput`."""
    rng = np.random.default_rng(index if seed is None else seed)
    created = (START + dt.timedelta(days=index)).isoformat(timespec="seconds")
    samples = (throughput * (1 + cv * rng.standard_normal(n))).tolist()
    latency = (10.0 * 100.0 / throughput * (1 + cv * rng.standard_normal(100))).tolist()
    cal = (calibration * (1 + 0.005 * rng.standard_normal(6))).tolist()
    base = {
        "run_id": f"2026{index:04d}", "created": created, "commit": None, "machine": MACHINE,
        "libraries": {"torch": "2.13.0"}, "model": {"name": "tiny", "sha256": "ab" * 32},
        "workload": "bulk", "request": {"quick": False, "request_size": None, "corpus_texts": 1000,
                    "texts": 1000},
        "calibration_gflops": cal,
        "metrics": [
            {"name": "bulk_best_texts_per_s", "title": "bulk at its fastest batch size",
             "study": "batch_size", "unit": "texts/s", "direction": "higher",
             "samples": samples, "quantile": 0.5, "calibrated": True},
            {"name": "query_latency_ms_p95", "title": "query latency, p95",
             "study": "batch_size", "unit": "ms", "direction": "lower", "samples": latency,
             "quantile": 0.95, "calibrated": True}]}
    return {**base, **changes}


def state(comparison: Any, name: str) -> str:
    return next(r["state"] for r in comparison.rows if r["name"] == name)


def test_cap_thins_older_runs_to_one_a_week_and_records_what_went(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    for index in range(60):
        append_run(path, record(index), cap=20)
    runs = load_history(path)
    assert len(runs) <= 20
    ids = [r["run_id"] for r in runs]
    assert ids[-10:] == [record(i)["run_id"] for i in range(50, 60)]  # newest half intact
    removed = json.loads(path.read_text())["removed"]
    assert {r["run_id"] for r in removed} | set(ids) == {record(i)["run_id"] for i in range(60)}
    assert not {r["run_id"] for r in removed} & set(ids)
    weeks = [dt.datetime.fromisoformat(r["created"]).isocalendar()[:2] for r in runs[:-10]]
    assert len(weeks) == len(set(weeks))  # older runs: at most one per week


def test_thin_keeps_everything_under_the_cap() -> None:
    runs = [record(i) for i in range(5)]
    assert thin(runs, 5) == (runs, [])


def test_a_run_recorded_twice_is_replaced_not_duplicated(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    append_run(path, record(1))
    append_run(path, record(1, throughput=50.0))
    runs = load_history(path)
    assert len(runs) == 1 and np.median(runs[0]["metrics"][0]["samples"]) < 60


@pytest.mark.parametrize("text", ["{not json", '{"schema_version": 99, "runs": []}',
                                  '{"schema_version": 2, "runs": [{"run_id": 3}]}'])
def test_a_broken_history_is_refused_by_name(tmp_path: Path, text: str) -> None:
    path = tmp_path / "history.json"
    path.write_text(text)
    with pytest.raises(ProfilerError, match=r"history\.json"):
        load_history(path)


def test_without_history_only_a_change_beyond_the_prior_noise_is_called() -> None:
    modest = compare_runs(record(1), record(2, throughput=80.0, n=10), [], "previous")
    row = next(r for r in modest.rows if r["name"] == "bulk_best_texts_per_s")
    assert row["noise"] == pytest.approx(0.10) and row["state"] == "INCONCLUSIVE"
    halved = compare_runs(record(1), record(2, throughput=50.0, n=10), [], "previous")
    assert state(halved, "bulk_best_texts_per_s") == "REGRESSED"


def test_a_planted_slowdown_is_regressed_and_noise_is_not(tmp_path: Path) -> None:
    history = [record(i) for i in range(3, 10)]  # seven earlier runs: the noise is known
    slower = compare_runs(record(1), record(2, throughput=80.0, n=10), history, "previous")
    assert slower.comparable
    assert state(slower, "bulk_best_texts_per_s") == "REGRESSED"
    assert state(slower, "query_latency_ms_p95") == "REGRESSED"
    assert slower.regressed == ["bulk_best_texts_per_s", "query_latency_ms_p95"]
    same = compare_runs(record(1), record(2), history, "previous")
    assert not same.regressed


def test_runs_from_another_machine_are_shown_but_never_judged() -> None:
    other = record(2, throughput=50.0, machine={**MACHINE, "cpu_model": "Other CPU"})
    assert "machines" in (incomparable(record(1), other) or "")
    comparison = compare_runs(record(1), other, [], "previous")
    assert not comparison.comparable and not comparison.regressed
    assert "Other CPU" in (comparison.warning or "")
    assert comparison.rows[0]["ratio"] == pytest.approx(0.5, rel=0.1)
    assert fingerprint(record(1)) != fingerprint(other)


def test_a_slower_machine_is_not_called_a_slower_model() -> None:
    slower_box = record(2, throughput=50.0, n=10, calibration=35.0)  # the matmul is 30% slower
    comparison = compare_runs(record(1), slower_box, [], "previous")
    assert comparison.calibration is not None and comparison.calibration["change"] < -0.25
    row = next(r for r in comparison.rows if r["name"] == "bulk_best_texts_per_s")
    assert row["state"] == "INCONCLUSIVE" and "machine" in row["reason"]


def test_drift_within_a_build_widens_the_interval_to_inconclusive() -> None:
    drifting = record(2, throughput=85.0, n=10)
    drifting["calibration_gflops"] = [50.0, 50.2, 49.9, 41.0, 41.2, 40.9]  # 19% slower at the end
    comparison = compare_runs(record(1), drifting, [], "previous")
    row = next(r for r in comparison.rows if r["name"] == "bulk_best_texts_per_s")
    assert row["noise"] > 0.15 and row["state"] == "INCONCLUSIVE"


def test_history_noise_is_the_spread_of_earlier_comparable_runs() -> None:
    spread = [record(i, throughput=100.0 * (1 + 0.1 * z), cv=0.001)
              for i, z in enumerate([-1.5, -0.7, 0.0, 0.6, 1.4, -0.2, 0.3, 1.0])]
    noise = history_noise("bulk_best_texts_per_s", spread, record(20), record(21))
    assert 0.05 < noise < 0.2
    assert history_noise("bulk_best_texts_per_s", spread[:3], record(20), record(21)) is None


def _project_with_history(root: Path, runs: list[dict[str, Any]]) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_json(data / "history.json", {"cap": 200, "runs": runs, "removed": []})
    return data


def test_compare_command_exits_3_exactly_when_something_regressed(tmp_path: Path) -> None:
    _project_with_history(tmp_path, [record(1), record(2), record(3, throughput=70.0, n=10)])
    done = run_cli("compare", "--fail-on-regression", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "REGRESSED" in done.stderr
    calm = run_cli("compare", "20260001", "20260002", "--fail-on-regression", cwd=tmp_path)
    assert calm.returncode == 0, calm.stderr
    assert "REGRESSED" not in calm.stderr
    plain = run_cli("compare", cwd=tmp_path)  # without the flag a regression is reported only
    assert plain.returncode == 0 and "REGRESSED" in plain.stderr


def test_baseline_set_and_show(tmp_path: Path) -> None:
    data = _project_with_history(tmp_path, [record(1), record(2)])
    done = run_cli("baseline", "set", "20260001", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((data / "baseline.json").read_text())["run_id"] == "20260001"
    shown = run_cli("baseline", "show", cwd=tmp_path)
    assert shown.returncode == 0 and "20260001" in shown.stdout
    assert "bulk_best_texts_per_s" in shown.stdout
    missing = run_cli("baseline", "set", "1999", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no run in the history match '1999'"


@pytest.mark.parametrize(("name", "text"), [("history.json", "{oops"),
                                            ("baseline.json", '{"schema_version": 7}')])
def test_compare_names_a_broken_file_in_one_line(tmp_path: Path, name: str, text: str) -> None:
    data = _project_with_history(tmp_path, [record(1), record(2)])
    (data / name).write_text(text)
    done = run_cli("compare", cwd=tmp_path)
    if name == "history.json":
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
        assert name in done.stderr and "Traceback" not in done.stderr
    else:  # the baseline is skipped, by name; the previous run is still compared
        assert done.returncode == 0 and name in done.stderr and "Traceback" not in done.stderr
    assert (data / name).read_text() == text


def test_a_pinned_baseline_is_compared_too(tmp_path: Path) -> None:
    data = _project_with_history(tmp_path, [record(1), record(2), record(3)])
    save_baseline(data / "baseline.json", record(1))
    done = run_cli("compare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "vs baseline 20260001" in done.stderr and "vs previous 20260002" in done.stderr


def test_each_verdict_says_the_smallest_change_it_could_call() -> None:
    import math

    from profiler.analysis.compare import detectable

    # an interval of ±10% in log space clears a 5% margin only beyond log(1.05) + log(1.1)
    assert detectable(math.expm1(-math.log(1.1)), 0.1, 0.05) == pytest.approx(1.05 * 1.1 - 1)
    assert detectable(-0.01, 0.01, 0.05) == pytest.approx(0.06, abs=1e-3)
    assert detectable(float("nan"), 0.1, 0.05) is None
    unknown = compare_runs(record(1), record(2), [], "previous")  # the 10% prior noise
    history = [record(i) for i in range(3, 10)]
    known = compare_runs(record(1), record(2), history, "previous")
    for comparison in (unknown, known):
        for row in comparison.rows:
            if row["low"] is not None:
                assert row["detectable"] == pytest.approx(
                    detectable(row["low"], row["high"], row["margin"]))
                assert row["detectable"] > row["margin"]
    assert unknown.detectable() > 0.2 > known.detectable()  # history tells a quieter machine
    assert unknown.to_dict()["detectable"] == unknown.detectable()


def test_new_weights_under_the_same_name_are_judged_and_named() -> None:
    """A team's new model version is the change the gate is for: judged, with the change said."""
    new_weights = {"name": "tiny", "sha256": "cd" * 32}
    history = [record(i) for i in range(3, 10)]
    slower = compare_runs(record(1), record(2, throughput=75.0, n=10, model=new_weights),
                          history, "previous")
    assert slower.comparable and slower.model_change == "weights abababab -> cdcdcdcd"
    assert state(slower, "bulk_best_texts_per_s") == "REGRESSED"
    assert slower.to_dict()["model_change"] == slower.model_change
    same = compare_runs(record(1), record(2), history, "previous")
    assert same.model_change is None
    other = compare_runs(record(1), record(2, model={"name": "other", "sha256": "cd" * 32}),
                         history, "previous")
    assert not other.comparable and "different models" in (other.warning or "")


def test_a_step_where_the_weights_changed_is_not_taken_for_noise() -> None:
    old = [record(i, seed=i) for i in range(3, 8)]
    new = [record(i, throughput=60.0, seed=i, model={"name": "tiny", "sha256": "cd" * 32})
           for i in range(8, 13)]
    spread = history_noise("bulk_best_texts_per_s", old + new, record(1), record(2))
    assert spread is not None and spread < 0.05  # each version's runs agree within a few %
    pooled = [{**r, "model": {"name": "tiny", "sha256": "ab" * 32}} for r in old + new]
    assert history_noise("bulk_best_texts_per_s", pooled, record(1), record(2)) > 0.2


def test_a_one_sample_metric_is_judged_only_once_history_tells_its_noise() -> None:
    """Two identical builds' searched capacities differed by 27%: a prior is no noise estimate."""
    def with_capacity(index: int, rps: float) -> dict[str, Any]:
        run = record(index)
        run["metrics"] = [*run["metrics"], {
            "name": "capacity_rps_p95_100ms", "title": "capacity", "study": "serving",
            "unit": "requests/s", "direction": "higher", "samples": [rps], "quantile": 0.5,
            "calibrated": True}]
        return run

    fresh = compare_runs(with_capacity(1, 23.3), with_capacity(2, 17.1), [], "previous")
    row = next(r for r in fresh.rows if r["name"] == "capacity_rps_p95_100ms")
    assert row["state"] == "INCONCLUSIVE" and row["noise"] == 0.0
    history = [with_capacity(i, 23.0 * (1 + 0.01 * (i % 3))) for i in range(3, 10)]
    known = compare_runs(with_capacity(1, 23.3), with_capacity(2, 11.0), history, "previous")
    assert state(known, "capacity_rps_p95_100ms") == "REGRESSED"


def test_a_metric_that_could_not_be_judged_is_shown_with_its_reason() -> None:
    """A capacity search that found no passing rate records 0: the page and the console say why."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from profiler.display import print_comparisons
    from profiler.report.render import environment

    after = record(2)
    after["metrics"][0] = {**after["metrics"][0], "samples": [0.0] * 5}
    comparison = compare_runs(record(1), after, [], "previous")
    row = next(r for r in comparison.to_dict()["rows"] if r["name"] == "bulk_best_texts_per_s")
    assert row["state"] == "INCONCLUSIVE" and row["low"] is None and row["detectable"] is None
    env = environment(Path(__file__).parents[1] / "templates")
    page = env.from_string('{% from "_macros.j2" import verdicts %}{{ verdicts(c) }}').render(
        c=comparison.to_dict())
    assert "— (INCONCLUSIVE: " in page and "bulk at its fastest batch size" in page
    out = io.StringIO()
    print_comparisons(Console(file=out, width=200), SimpleNamespace(
        problems=[], comparisons=[comparison], confirmed=None))
    assert "— (INCONCLUSIVE" in out.getvalue()
