"""History, verdicts and the gate through real builds on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SHARED, copy_build
from helpers import read_page, run_profiler, table_by_header

from profiler.history.store import fingerprint


def confirmed_rows(counts: list[dict[str, int]] | None) -> list[dict[str, str]]:
    """Rows standing for the verdict counts recorded before --confirm re-measured."""
    return [{"state": state} for c in counts or [] for state, n in c.items() for _ in range(n)]


def _build(project: Path, model: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_profiler("build", "--model", str(model), "--no-scalene", "--study", "batch_size",
                        *extra, cwd=project)


@SHARED
def test_builds_are_recorded_judged_charted_and_gated(bulk_build: Path, tiny_model: Path,
                                                      tmp_path: Path) -> None:
    tiny_project = copy_build(bulk_build, tmp_path / "project")  # its first run: every study
    data = tiny_project / "data"
    baseline = data / "baseline.json"
    baseline.write_text("{ not json")  # a broken baseline: named, left alone, not compared
    done = _build(tiny_project, tiny_model, "--fail-on-regression", "--confirm")
    assert done.returncode == 0, done.stderr
    assert "baseline.json" in done.stderr and "Traceback" not in done.stderr
    assert baseline.read_text() == "{ not json"

    runs = json.loads((data / "history.json").read_text())["runs"]
    assert len(runs) == 2 and fingerprint(runs[0]) == fingerprint(runs[1])
    latest = data / "latest"
    assert runs[1]["run_id"] == latest.resolve().name
    names = {m["name"] for m in runs[1]["metrics"]}
    assert {"bulk_best_texts_per_s", "stream_best_texts_per_s", "query_latency_ms_p95"} <= names
    assert "cold_start_s" not in names  # the tiny settings say cold_start = false
    assert len(runs[1]["calibration_gflops"]) == 10
    assert runs[1]["model"]["sha256"] and len(runs[1]["model"]["sha256"]) == 64

    comparison = json.loads((latest / "comparison.json").read_text())
    assert any("baseline.json" in p for p in comparison["problems"])
    confirmed = comparison["confirmed"]
    suspect = any(r["state"] in ("REGRESSED", "INCONCLUSIVE") for r in confirmed_rows(
        confirmed["before"]))
    assert confirmed["studies"] == (["batch_size"] if suspect else [])
    if suspect:  # the re-measured passes are pooled with the run's own three
        bulk = next(m for m in runs[1]["metrics"] if m["name"] == "bulk_best_texts_per_s")
        assert len(bulk["samples"]) == 3 + 6
        assert (latest / "confirm" / "batch_size.json").is_file()
    previous = comparison["comparisons"][0]
    assert previous["label"] == "previous" and previous["before"] == runs[0]["run_id"]
    assert previous["comparable"] and {r["name"] for r in previous["rows"]} == names
    for row in previous["rows"]:
        assert row["state"] in ("IMPROVED", "REGRESSED", "UNCHANGED", "INCONCLUSIVE")
        if row["name"] == "query_latency_ms_p95":  # the tiny settings time ten calls a pass
            assert row["state"] == "INCONCLUSIVE" and row["low"] is None, row
            assert "too few samples for a p95" in row["reason"]
        else:
            assert row["low"] <= row["change"] <= row["high"]

    home = read_page(tiny_project / "site" / "index.html")
    verdict_rows = table_by_header(home, "Metric", "Verdict")
    assert {r["Metric"] for r in verdict_rows} == {r["title"] for r in previous["rows"]}
    for page_row in verdict_rows:  # what each verdict could have seen, from its own interval
        row = next(r for r in previous["rows"] if r["title"] == page_row["Metric"])
        assert page_row["Smallest change it can call"] == (
            f"±{100 * row['detectable']:,.0f}%" if row["detectable"] is not None else "—")
    assert f"only beyond ±{100 * previous['detectable']:,.0f}%" in home.text
    assert "Benjamini" in home.text and "baseline.json" in home.text
    targets = {r["Target"]: r for r in table_by_header(home, "Target", "Result")}
    assert set(targets) == {"Throughput", "p95 latency per text", "Peak memory"}
    assert targets["Peak memory"]["Result"] == "not measured"  # no memory study in this build
    assert targets["Throughput"]["Result"] in ("pass", "fail")
    assert "Best throughput (bulk)" in home.text and "Against the previous run" in home.text
    assert len(home.specs) == len(names)  # a sparkline of each metric's two runs
    assert all(len(spec["data"]["values"]) == 2 for spec in home.specs)

    trends = read_page(tiny_project / "site" / "report" / "trends" / "index.html")
    listed = table_by_header(trends, "Run", "Calibration")
    assert [r["Run"] for r in listed] == [runs[1]["run_id"], runs[0]["run_id"]]
    every = names | {m["name"] for m in runs[0]["metrics"]}  # the first run had every study
    assert len(trends.specs) == len(every)  # a chart per metric of either run
    for run in runs:  # each run's data is on the site
        assert (tiny_project / "site" / "report" / "files" / "history"
                / f"{run['run_id']}.json").is_file()

    faster = json.loads(json.dumps(runs[0]))  # as if that run had been 1000x faster
    faster["run_id"], faster["created"] = "20000101T000000Z", "2000-01-01T00:00:00+00:00"
    faster["calibration_gflops"] = []  # on a machine whose speed then is unknown
    for metric in faster["metrics"]:
        scale = 1000.0 if metric["direction"] == "higher" else 1 / 1000
        metric["samples"] = [scale * x for x in metric["samples"]]
        metric.pop("validity", None)  # the gate is under test, not the tiny model's noise,
    baseline.write_text(json.dumps({"schema_version": 2, **faster}))
    settings = tiny_project / "profiler.toml"  # which would leave a noisy drop INCONCLUSIVE
    settings.write_text("max_cv = 1000.0\n" + settings.read_text())
    done = _build(tiny_project, tiny_model, "--fail-on-regression")
    assert done.returncode == 3, done.stderr
    assert "REGRESSED" in done.stderr
    run_dir = latest.resolve()
    pinned = next(c for c in json.loads((run_dir / "comparison.json").read_text())
                  ["comparisons"] if c["label"] == "baseline")
    assert "bulk_best_texts_per_s" in pinned["regressed"]
    home = read_page(tiny_project / "site" / "index.html")  # the failure is still published
    assert run_dir.name in home.text and "REGRESSED" in home.text
