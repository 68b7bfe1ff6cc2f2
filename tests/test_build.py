"""`profiler build` and `profiler render` on the tiny model: JSON results, pages and site."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import fmt, read_page, run_profiler, table_by_header


def test_build_writes_results_pages_and_site(tiny_project: Path, tiny_model: Path) -> None:
    done = run_profiler("build", "--model", str(tiny_model), "--no-scalene", "--study",
                        "batch_size", cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    latest = tiny_project / "data" / "latest"
    assert latest.is_symlink()
    run_dir = latest.resolve()
    assert run_dir.parent == tiny_project / "data" / "runs"
    for name in ("config.json", "system.json", "batch_size.json", "summary.json"):
        assert json.loads((run_dir / name).read_text())["schema_version"] == 1
    assert not list((tiny_project / "data" / "runs" / ".incomplete").iterdir())

    result = json.loads((run_dir / "batch_size.json").read_text())
    assert result["model"]["embedding_dim"] == 32
    assert result["model"]["max_seq_length"] == 64
    assert result["scalene"]["status"] == "disabled"
    points = result["result"]["points"]
    assert [p["batch_size"] for p in points] == [2, 4, 8]
    for point in points:
        assert point["throughput_texts_per_s"]["n"] == 3
        assert len(point["throughput_texts_per_s"]["samples"]) == 3
        assert point["texts_per_repeat"] == 16
        assert point["forward_passes_per_repeat"] == 16 // point["batch_size"]
        assert len(point["batch_latency_ms"]["samples"]) == 3 * 16 // point["batch_size"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["batch_sizes"] == [2, 4, 8]
    assert config["settings"]["timing"]["texts_per_repeat"] == 16

    site = tiny_project / "site"
    assert (site / "index.html").is_file()
    assert (site / "assets" / "javascripts" / "vega-bundle.js").is_file()
    assert "not profiled" in (site / "report" / "batch-size" / "index.html").read_text().lower()


def test_pages_show_the_numbers_in_the_json(tiny_project: Path, tiny_model: Path) -> None:
    assert run_profiler("build", "--model", str(tiny_model), "--no-scalene", "--study",
                        "batch_size", cwd=tiny_project).returncode == 0
    run_dir = (tiny_project / "data" / "latest").resolve()
    result = json.loads((run_dir / "batch_size.json").read_text())["result"]
    page = read_page(tiny_project / "site" / "report" / "batch-size" / "index.html")

    rows = {r["Batch size"]: r for r in table_by_header(page, "Batch size", "Median")}
    latency = {r["Batch size"]: r for r in table_by_header(page, "Batch size", "p95")}
    for point in result["points"]:
        row, lat = rows[str(point["batch_size"])], latency[str(point["batch_size"])]
        stats = point["throughput_texts_per_s"]
        assert row["Median (texts/s)"] == fmt(stats["median"])
        assert row["Min"] == fmt(stats["min"]) and row["Max"] == fmt(stats["max"])
        assert row["CV %"] == fmt(100 * stats["cv"])
        assert lat["p95 (ms)"] == fmt(point["batch_latency_ms"]["p95"], 2)
        assert lat["Peak RSS increase (MB)"] == fmt(point["peak_rss_increase_mb"])

    assert len(page.specs) == 3
    plotted = {v["batch_size"]: v["median"] for layer in page.specs[0]["layer"]
               for v in layer.get("data", page.specs[0].get("data", {})).get("values", [])}
    assert plotted == {p["batch_size"]: p["throughput_texts_per_s"]["median"]
                       for p in result["points"]}

    summary = json.loads((run_dir / "summary.json").read_text())["studies"]["batch_size"]
    home = read_page(tiny_project / "site" / "index.html")
    headline = {r["Figure"]: r["Value"] for r in table_by_header(home, "Figure", "Value")}
    assert headline["Best throughput"].startswith(
        fmt(summary["best_throughput_texts_per_s"]) + " texts/s")
    assert headline["Recommended batch size"].startswith(str(summary["recommended_batch_size"]))


def test_render_rebuilds_pages_without_measuring(tiny_project: Path, tiny_model: Path) -> None:
    assert run_profiler("build", "--model", str(tiny_model), "--no-scalene", "--study",
                        "batch_size", cwd=tiny_project).returncode == 0
    shutil.rmtree(tiny_project / "site")
    shutil.rmtree(tiny_project / "docs" / "report")
    runs_before = sorted((tiny_project / "data" / "runs").iterdir())
    done = run_profiler("render", cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    assert (tiny_project / "site" / "report" / "batch-size" / "index.html").is_file()
    assert sorted((tiny_project / "data" / "runs").iterdir()) == runs_before


def test_build_under_scalene_records_profile_and_overhead(tiny_project: Path,
                                                          tiny_model: Path) -> None:
    done = run_profiler("build", "--model", str(tiny_model), cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    run_dir = (tiny_project / "data" / "latest").resolve()
    study = json.loads((run_dir / "batch_size.json").read_text())
    assert study["scalene"]["status"] == "profiled"
    assert (run_dir / study["scalene"]["profile"]).is_file()
    overhead = study["result"]["scalene_overhead"]
    assert overhead["rounds"] == 2
    assert overhead["batch_size"] == study["result"]["recommended_batch_size"]
    assert len(overhead["on_texts_per_s"]["samples"]) == 2
    page = (tiny_project / "site" / "report" / "batch-size" / "index.html").read_text()
    assert "batch_size-scalene.json.gz" in page
    assert (tiny_project / "site" / "report" / "files" / "batch_size-scalene.json.gz").is_file()


def test_failing_scalene_falls_back_to_a_plain_run(tiny_project: Path, tiny_model: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler import scalene as scalene_module
    from profiler.build import Workspace, plan_build, run_build
    from profiler.config import load_settings

    def broken(run_dir: Path, studies: list[str], outfile: Path) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit('scalene: cannot start')"]

    monkeypatch.setattr(scalene_module, "scalene_command", broken)
    workspace = Workspace(tiny_project)
    settings = load_settings({"model": str(tiny_model), "studies": ["batch_size"]},
                             tiny_project)
    run_dir = run_build(plan_build(settings, workspace), workspace, lambda event: None)
    study = json.loads((run_dir / "batch_size.json").read_text())
    assert study["scalene"]["status"] == "failed"
    assert "cannot start" in study["scalene"]["reason"]
    assert study["result"]["points"]
