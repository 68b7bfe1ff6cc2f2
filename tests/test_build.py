"""`profiler build` and `profiler render` on the tiny model: JSON results, pages and site."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import SHARED, copy_build
from helpers import fmt, read_page, run_cli, run_profiler, table_by_header

from profiler.analysis.hotspots import is_active
from profiler.config import Timing
from profiler.storage import SCHEMA_VERSION
from profiler.studies import STUDIES


@SHARED
def test_build_writes_results_pages_and_site(bulk_build: Path) -> None:
    tiny_project = bulk_build
    latest = tiny_project / "data" / "latest"
    assert latest.is_symlink()
    run_dir = latest.resolve()
    assert run_dir.parent == tiny_project / "data" / "runs"
    for name in ("config.json", "system.json", "summary.json", *(f"{n}.json" for n in STUDIES)):
        assert json.loads((run_dir / name).read_text())["schema_version"] == SCHEMA_VERSION
    assert not list((tiny_project / "data" / "runs" / ".incomplete").iterdir())
    assert not (run_dir / "texts.jsonl").exists()  # the studies' copy of the corpus is not kept
    for name in STUDIES:  # unprofiled, each study's process was forked from the zygote
        assert (run_dir / "logs" / f"{name}.log").read_text().splitlines()[0].endswith(
            f"worker.py {run_dir.parent / '.incomplete' / run_dir.name} {name} (forked)")

    result = json.loads((run_dir / "batch_size.json").read_text())
    assert result["model"]["embedding_dim"] == 32
    assert result["model"]["max_seq_length"] == 64
    assert result["scalene"]["status"] == "disabled"
    study = result["result"]
    assert study["workload"] == "bulk"
    assert study["request"]["texts"] == 48 and study["request"]["asked"] == 48
    points = study["points"]
    # every batch size asked for plus sentence-transformers' default (32), for bulk and stream
    assert [(p["workload"], p["batch_size"]) for p in points] == [
        (w, size) for w in ("bulk", "stream") for size in (2, 4, 8, 32)]
    for point in points:
        calls = 1 if point["workload"] == "bulk" else -(-48 // point["batch_size"])
        assert point["texts"] == 48 and point["calls_per_pass"] == calls
        assert point["throughput_texts_per_s"]["n"] == 3  # timing.max_rounds rounds
        assert len(point["throughput_texts_per_s"]["samples"]) == 3
        latencies = point["call_latency_ms"]["samples"]
        if point["workload"] == "bulk":  # one call over the request, estimated each round
            assert len(latencies) == 3
            assert point["throughput_texts_per_s"]["median"] == pytest.approx(
                48 / (sorted(latencies)[1] / 1000))
        else:  # every call of each round's share: whole batches of the schedule
            assert 3 <= len(latencies) <= 3 * calls
        assert point["padding"]["real_tokens"] <= point["padding"]["padded_tokens"]
    for size in (2, 4, 8, 32):  # the same texts, so the same real tokens whatever the batching
        pair = [p["padding"] for p in points if p["batch_size"] == size]
        assert pair[0]["real_tokens"] == pair[1]["real_tokens"]
    assert study["query"]["queries"] == 10 and study["query"]["latency_ms"]["n"] == 10
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["batch_sizes"] == [2, 4, 8]
    assert config["settings"]["request_size"] == 48
    assert config["settings"]["timing"]["workload_repeats"] == 3

    site = tiny_project / "site"
    assert (site / "index.html").is_file()
    assert (site / "assets" / "javascripts" / "vega-bundle.js").is_file()
    page = (site / "report" / "batch-size" / "index.html").read_text()
    assert "not profiled" in page.lower()
    assert "Fewer texts than one batch" not in page  # 48 texts fill a batch of 32
    assert "<title>Embedding profile: tiny</title>" in (site / "index.html").read_text()
    with (site / "report" / "files" / "batch_size.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))  # one row per measured configuration
    assert [(r["workload"], int(r["batch_size"])) for r in rows] == [
        (p["workload"], p["batch_size"]) for p in study["points"]]
    assert [float(r["throughput_texts_per_s_median"]) for r in rows] == pytest.approx(
        [p["throughput_texts_per_s"]["median"] for p in study["points"]])
    assert 'href="../files/batch_size.csv"' in page


@SHARED
def test_pages_show_the_numbers_in_the_json(bulk_build: Path) -> None:
    tiny_project = bulk_build
    run_dir = (tiny_project / "data" / "latest").resolve()
    result = json.loads((run_dir / "batch_size.json").read_text())["result"]
    page = read_page(tiny_project / "site" / "report" / "batch-size" / "index.html")

    rows = {(r["Workload"], r["Batch size"]): r
            for r in table_by_header(page, "Workload", "Calls per pass")}
    assert len(rows) == len(result["points"]) == 8
    for point in result["points"]:
        row = rows[(point["workload"], str(point["batch_size"]))]
        stats = point["throughput_texts_per_s"]
        assert row["Texts/s (median)"] == fmt(stats["median"])
        assert row["Min"] == fmt(stats["min"]) and row["Max"] == fmt(stats["max"])
        assert row["CV %"] == fmt(100 * stats["cv"])
        assert row["Rounds"] == "3" and row["Calls per pass"] == str(point["calls_per_pass"])
        assert row["p95 (ms)"] == fmt(point["call_latency_ms"]["p95"])
        assert row["Real / padded tokens %"] == fmt(100 * point["padding"]["real_share"])

    # each contender's share was sized to take about the same time: 2x the minimum rounds fit
    share_s = result["rounds"]["share_s"]
    assert share_s == pytest.approx(Timing().budget_s / (2 * 3 * (len(result["points"]) + 1)))
    assert f"sized from each contender's warm-up to take about {fmt(share_s, 2)} s" in page.text

    assert len(page.specs) == 3
    plotted = {(v["workload"], v["batch_size"]): v["median"]
               for v in page.specs[0]["data"]["values"]}
    assert plotted == {(p["workload"], p["batch_size"]): p["throughput_texts_per_s"]["median"]
                       for p in result["points"]}
    padding = {(v["workload"], v["batch_size"]): v["real_pct"]
               for v in page.specs[1]["data"]["values"]}
    assert padding == pytest.approx({(p["workload"], p["batch_size"]):
                                     100 * p["padding"]["real_share"] for p in result["points"]})

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["workload"] == "bulk"
    headline_figures = summary["studies"]["batch_size"]
    bulk = result["choices"]["bulk"]
    assert headline_figures["recommended_batch_size"] == bulk["recommended_batch_size"]
    home = read_page(tiny_project / "site" / "index.html")
    headline = {r["Figure"]: r["Value"] for r in table_by_header(home, "Figure", "Value")}
    assert headline["Best throughput (bulk, 48 texts per pass)"].startswith(
        fmt(headline_figures["best_throughput_texts_per_s"]) + " texts/s")
    assert headline["Recommended batch size (bulk)"].startswith(
        str(headline_figures["recommended_batch_size"]))


@SHARED
def test_render_rebuilds_pages_without_measuring(bulk_build: Path, tmp_path: Path) -> None:
    tiny_project = copy_build(bulk_build, tmp_path / "project")
    shutil.rmtree(tiny_project / "site")
    shutil.rmtree(tiny_project / "docs" / "report")
    runs_before = sorted((tiny_project / "data" / "runs").iterdir())
    serving = (tiny_project / "data" / "latest").resolve() / "serving.json"
    study = json.loads(serving.read_text())  # as if its budget had left two loads out
    curve = study["result"]["curves"][0]
    assert curve["left_out_rps"] == [] and curve["budget_s"] == 30.0
    curve["left_out_rps"] = [2.5, 5.0]
    del study["result"]["thread_cost"]["idle_share"]  # a run from before it was recorded
    serving.write_text(json.dumps(study))
    sizes = serving.with_name("batch_size.json")
    batch = json.loads(sizes.read_text())
    del batch["result"]["rounds"]["share_s"]  # a run whose shares held about round_texts texts
    sizes.write_text(json.dumps(batch))
    done = run_cli("render", cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    assert (tiny_project / "site" / "report" / "batch-size" / "index.html").is_file()
    assert sorted((tiny_project / "data" / "runs").iterdir()) == runs_before
    page = read_page(tiny_project / "site" / "report" / "serving" / "index.html")
    assert (f"{curve['label']}: left out at 2.5, 5.0 requests/s, whose runs would have ended "
            "past the curve's 30 s time budget") in " ".join(page.text.split())
    threads = study["result"]["thread_cost"]  # said as that run measured it: back to back
    assert (f"median {fmt(threads['main_ms'])} ms on the main thread and "
            f"{fmt(threads['worker_ms'])} ms on a worker thread") in " ".join(page.text.split())
    assert "a worker thread that owns the model forms batches" in " ".join(page.text.split())
    page = read_page(tiny_project / "site" / "report" / "batch-size" / "index.html")
    assert (f"the same share of the request (about {batch['result']['round_texts']} texts of "
            "whole batches, a different share each round)") in page.text
    assert "sized from each contender's warm-up" not in page.text


# the admonition at the top of each page: the workload its figures were measured on, which for
# memory, leak, stages and text length is theirs whatever the user serves
PAGE_WORKLOADS = {"index.html": "query", "report/batch-size/index.html": "query",
                  "report/optimizations/index.html": "query",
                  "report/bottlenecks/index.html": "query",
                  "report/recommendations/index.html": "query"}
OWN_WORKLOADS = {"report/memory/index.html": "bulk", "report/leak/index.html": "bulk",
                 "report/stages/index.html": "stream", "report/text-length/index.html": "stream"}


def page_workloads(site: Path, pages: dict[str, str]) -> dict[str, list[str]]:
    """The workload each page's admonition names."""
    return {name: re.findall(r'<p class="admonition-title">Workload: ([^<]*)</p>',
                             (site / name).read_text(encoding="utf-8")) for name in pages}


@SHARED
def test_studies_with_a_workload_of_their_own_name_it(bulk_build: Path) -> None:
    assert page_workloads(bulk_build / "site", OWN_WORKLOADS) == {
        name: [workload] for name, workload in OWN_WORKLOADS.items()}


def test_full_build_under_scalene_profiles_and_names_every_workload(tiny_project: Path,
                                                                    tiny_model: Path) -> None:
    # two studies, each in its own profiled process (the shared build runs all six, plain,
    # and shows the pages with a workload of their own); one experiment keeps it short.
    # Scalene writes nothing for a process whose profiled blocks drew no sample: the tiny
    # model's profiled passes get three times the texts and one round more, so they draw some
    settings = tiny_project / "profiler.toml"
    settings.write_text(settings.read_text().replace("texts_per_repeat = 16",
                                                     "texts_per_repeat = 48")
                        .replace("overhead_rounds = 2", "overhead_rounds = 3"))
    done = run_profiler("build", "--model", str(tiny_model), "--workload", "query",
                        "--study", "batch_size", "--study", "optimizations", "--experiment",
                        "bf16", cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    run_dir = (tiny_project / "data" / "latest").resolve()
    study = json.loads((run_dir / "batch_size.json").read_text())
    assert study["scalene"]["status"] == "profiled"
    profile = json.loads(gzip.decompress((run_dir / study["scalene"]["profile"]).read_bytes()))
    lines = [line for found in profile["files"].values() for line in found["lines"]]
    assert lines and all(is_active(line) for line in lines)  # Scalene's lines with samples
    assert study["hotspots"]["cpu_lines"]
    overhead = study["result"]["scalene_overhead"]
    assert overhead["rounds"] == 3 and overhead["workload"] == "bulk"
    assert overhead["batch_size"] == study["result"]["choices"]["bulk"]["recommended_batch_size"]
    assert len(overhead["on_texts_per_s"]["samples"]) == 3
    page = (tiny_project / "site" / "report" / "batch-size" / "index.html").read_text()
    # the raw profile stays in data/ (MBs each); `--scalene-html` publishes it with the viewer
    assert "data/runs/&lt;run&gt;/scalene/batch_size.json.gz" in page
    assert not list((tiny_project / "site" / "report" / "files").glob("*-scalene.*"))

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["workload"] == "query"
    assert set(summary["studies"]) == {"batch_size", "optimizations"}
    for name in summary["studies"]:  # each its own process, each profiled
        assert json.loads((run_dir / f"{name}.json").read_text())["scalene"]["status"] == \
            "profiled", name
    assert study["result"]["workload"] == "query"
    optimizations = json.loads((run_dir / "optimizations.json").read_text())["result"]
    assert optimizations["workload"] == "query" and optimizations["batch_sizes"] == [1]
    assert all(e["workload"] == "query" and e["batch_size"] == 1
               for e in optimizations["experiments"] if e["status"] == "measured")
    assert "fp32_default" not in [e["name"] for e in optimizations["experiments"]]
    best = summary["studies"]["optimizations"]["best"]  # against fp32, one text per call
    assert best is not None and (best["batch_size"], best["plain_batch_size"]) == (1, 1)
    assert {b["workload"] for b in summary["bottlenecks"]} <= {"query", "bulk", "stream"}
    assert page_workloads(tiny_project / "site", PAGE_WORKLOADS) == {
        name: [workload] for name, workload in PAGE_WORKLOADS.items()}
    # a query service's home page leads with latency per call, not a batch size
    home = read_page(tiny_project / "site" / "index.html")
    headline = {r["Figure"]: r["Value"] for r in table_by_header(home, "Figure", "Value")}
    figures = summary["studies"]["batch_size"]
    assert figures["recommended_batch_size"] is None
    latency = next(v for k, v in headline.items() if k.startswith("Single-query latency"))
    assert latency.startswith(f"p50 {fmt(figures['query_latency_ms_p50'], 2)} ms")


def test_profiles_are_published_compressed_without_scalene_viewer_unless_asked(
        tmp_path: Path) -> None:
    from profiler.build import _finish_profiles
    from profiler.storage import write_json

    (tmp_path / "scalene").mkdir()
    shutil.copy2(Path(__file__).parent / "data" / "scalene_profile.json",
                 tmp_path / "scalene" / "batch_size.json")
    write_json(tmp_path / "batch_size.json", {"scalene": {
        "status": "profiled", "reason": None, "profile": "scalene/batch_size.json", "html": None}})
    _finish_profiles(tmp_path, ["batch_size"], html=False, on_event=lambda event: None)
    study = json.loads((tmp_path / "batch_size.json").read_text())
    assert study["scalene"]["profile"] == "scalene/batch_size.json.gz"
    assert study["scalene"]["html"] is None
    assert "error" not in study["hotspots"]
    assert sorted(p.name for p in (tmp_path / "scalene").iterdir()) == ["batch_size.json.gz"]


@pytest.mark.parametrize("include_host_info", [False, True])
def test_published_scalene_files_keep_host_details_off_unless_asked(
        tmp_path: Path, include_host_info: bool) -> None:
    import gzip

    from profiler.report.render import copy_downloads
    from profiler.studies.stages import StagesResult

    home, user = "/home/alice", "alice"
    run_dir = tmp_path / "run"
    (run_dir / "scalene").mkdir(parents=True)
    profile = json.dumps({"files": {f"{home}/.venv/lib/torch/nn.py": {}}, "user": user})
    (run_dir / "scalene" / "stages.json.gz").write_bytes(gzip.compress(profile.encode()))
    (run_dir / "scalene" / "stages.html").write_text(f"<p>{home}/app.py run by {user}</p>")
    run = {"config": {"settings": {"scalene_html": True}},
           "results": {"stages": StagesResult(stages=[], points=[])},
           "studies": {"stages": {"scalene": {
               "profile": "scalene/stages.json.gz", "html": "scalene/stages.html"}}}}
    hidden = [] if include_host_info else [(home, "~"), (user, "<user>")]
    copy_downloads(run_dir, tmp_path / "report", run, hidden)
    files = tmp_path / "report" / "files"
    published = (gzip.decompress((files / "stages-scalene.json.gz").read_bytes()).decode()
                 + (files / "stages-scalene.html").read_text())
    assert (home in published and user in published) is include_host_info
    if not include_host_info:
        assert "~/.venv/lib/torch/nn.py" in published and "<user>" in published


def test_failing_scalene_falls_back_to_a_plain_run(tiny_project: Path, tiny_model: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.build import Workspace, plan_build, run_build
    from profiler.config import load_settings
    from profiler.runner import process as scalene_module

    def broken(run_dir: Path, studies: list[str], outfile: Path) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit('scalene: cannot start')"]

    monkeypatch.setattr(scalene_module, "scalene_command", broken)
    workspace = Workspace(tiny_project)
    settings = load_settings({"model": str(tiny_model), "studies": ["stages"]}, tiny_project)
    run_dir = run_build(plan_build(settings, workspace), workspace, lambda event: None)
    study = json.loads((run_dir / "stages.json").read_text())
    assert study["scalene"]["status"] == "failed"
    assert "cannot start" in study["scalene"]["reason"]
    assert study["result"]["points"]  # measured all the same, without the profiler


def test_scalene_crashing_in_a_shared_process_reruns_only_the_unfinished_studies(
        tiny_project: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.build import Workspace, plan_build, run_build
    from profiler.config import load_settings
    from profiler.runner import process as scalene_module

    def crashes_after_the_first(run_dir: Path, studies: list[str], outfile: Path) -> list[str]:
        first = [sys.executable, str(scalene_module.WORKER), str(run_dir), studies[0]]
        return ["sh", "-c", " ".join(first) + " && exit 245"]  # Scalene's code for a SIGSEGV

    monkeypatch.setattr(scalene_module, "scalene_command", crashes_after_the_first)
    workspace = Workspace(tiny_project)
    settings = load_settings({"model": str(tiny_model), "studies": ["leak", "stages"],
                              "quick": True}, tiny_project)
    run_dir = run_build(plan_build(settings, workspace), workspace, lambda event: None)
    commands = [line for line in (run_dir / "logs" / "all-studies.log").read_text().splitlines()
                if line.startswith("$ ")]
    assert [c.split()[-1] for c in commands] == ["245", "stages"]  # the crash, then the rest
    for name in ("leak", "stages"):
        study = json.loads((run_dir / f"{name}.json").read_text())
        assert study["scalene"]["status"] == "failed" and study["result"]
        assert "1 study it finished keeps its figures" in study["scalene"]["reason"]


@SHARED
def test_serving_page_shows_every_capacity_and_the_fleet(bulk_build: Path) -> None:
    run_dir = (bulk_build / "data" / "latest").resolve()
    result = json.loads((run_dir / "serving.json").read_text())["result"]
    page = read_page(bulk_build / "site" / "report" / "serving" / "index.html")

    rows = table_by_header(page, "Configuration", "Capacity (requests/s)")
    settings = [(c["title"], s) for c in result["configs"] for s in c["settings"]]
    assert [s["batcher"] for _, s in settings if _ == result["configs"][0]["title"]] == [
        "dynamic", "sort_window"]  # the tiny settings' grid, searched in its order
    assert len(rows) == len(settings)
    for row, (title, setting) in zip(rows, settings, strict=True):
        assert row["Configuration"] == title
        assert row["Batcher setting"].startswith(setting["label"])
        assert row["Capacity (requests/s)"] == fmt(setting["capacity"]["rate_rps"])
        assert row["Runs"] == str(len(setting["capacity"]["runs"]))

    load = table_by_header(page, "Batcher", "Queue (ms)")
    assert len(load) == sum(len(c["points"]) for c in result["curves"])
    fleet = {r["Load balancing"]: r for r in table_by_header(page, "Load balancing", "p95")}
    for plan in result["fleet"]:
        name = "join the shortest queue" if plan["balance"] == "jsq" else "random"
        assert fleet[name][next(k for k in fleet[name] if k.startswith("Replicas"))] == (
            str(plan["replicas"]) if plan["replicas"] else "none found")
    assert len(page.specs) == 5  # capacity, latency against load, queue/compute, simulated, fleet
    threads = result["thread_cost"]  # a second thread against the one the study serves from
    assert threads["rounds"] == 8 and min(threads["main_ms"], threads["worker_ms"]) > 0
    assert threads["idle_share"] == 0.5
    assert (f"{fmt(threads['main_ms'])} ms on the model's own thread and "
            f"{fmt(threads['worker_ms'])} ms on a second thread") in " ".join(page.text.split())
    assert f"the second thread ran at {fmt(threads['worker_speed'], 2)}× the speed" in " ".join(
        page.text.split())

    summary = json.loads((run_dir / "summary.json").read_text())
    home = read_page(bulk_build / "site" / "index.html")
    assert f"{fmt(summary['studies']['serving']['capacity_rps'])} requests/s" in home.text
    rows_csv = list(csv.DictReader((bulk_build / "site" / "report" / "files" / "serving.csv")
                                   .read_text(encoding="utf-8").splitlines()))
    runs = sum(len(s["capacity"]["runs"]) for _, s in settings)
    assert sum(r["phase"] == "capacity search" for r in rows_csv) == runs
    history = json.loads((bulk_build / "data" / "history.json").read_text())
    metrics = {m["name"]: m for m in history["runs"][-1]["metrics"]}
    capacity = metrics["capacity_rps_p95_100ms"]  # the target in its name: only like is judged
    assert capacity["direction"] == "higher"
    assert capacity["samples"] == [summary["studies"]["serving"]["capacity_rps"]]


def test_seconds_are_each_studys_own_when_a_quick_build_shared_one_process() -> None:
    from profiler.build import seconds_of

    shared = {"startup": 7.0, "load": 11.0}
    quick = {"batch_size": {"wall_s": 200.0, "process_shared_with": ["leak"],
                            "process_s": {**shared, "study": 27.0}},
             "leak": {"wall_s": 200.0, "process_shared_with": ["batch_size"],
                      "process_s": {**shared, "study": 9.0}}}
    assert seconds_of(quick) == {"process start and model load": 18.0, "batch_size": 27.0,
                                 "leak": 9.0}
    full = {"batch_size": {"wall_s": 60.0, "process_shared_with": [],
                           "process_s": {**shared, "study": 40.0}}}
    assert seconds_of(full) == {"batch_size": 60.0}  # its own process: the whole of it
