"""End to end on the real all-MiniLM-L6-v2 (bundled offline copy): `profiler build --quick`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fmt, read_page, run_profiler, table_by_header

from profiler.config import QUICK_TIMING
from profiler.model import BUNDLED_SHA256
from profiler.studies import STUDIES

pytestmark = pytest.mark.slow


def test_quick_build_on_the_real_model(project: Path, vega_bundle: Path) -> None:
    texts = (project / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()[:64]
    (project / "small.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (project / "docs" / "assets" / "javascripts" / "vega-bundle.js").write_bytes(
        vega_bundle.read_bytes())

    done = run_profiler("build", "--quick", "--corpus", "small.txt", cwd=project)
    assert done.returncode == 0, done.stderr[-2000:]

    run_dir = (project / "data" / "latest").resolve()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_source"]["origin"] == "bundled"
    assert config["model_source"]["sha256"] == BUNDLED_SHA256
    assert config["corpus"]["texts"] == 64
    study = json.loads((run_dir / "batch_size.json").read_text())
    model = study["model"]
    assert model["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (model["embedding_dim"], model["max_seq_length"]) == (384, 256)
    assert 22_000_000 < model["parameters"] < 23_000_000
    assert (model["dtype"], model["device"]) == ("float32", "cpu")
    assert study["scalene"]["status"] == "profiled"
    result = study["result"]
    assert [p["batch_size"] for p in result["points"]] == [8, 16, 32, 64, 128, 256]
    assert result["scalene_overhead"]["on_texts_per_s"]["n"] == QUICK_TIMING.overhead_rounds

    page = read_page(project / "site" / "report" / "batch-size" / "index.html")
    assert len(page.specs) == 3
    rows = {r["Batch size"]: r for r in table_by_header(page, "Batch size", "Median")}
    for point in result["points"]:
        row = rows[str(point["batch_size"])]
        assert row["Median (texts/s)"] == fmt(point["throughput_texts_per_s"]["median"])
        assert row["Tokens/s"] == fmt(point["tokens_per_s"], 0)
    overhead = {r["Profiling"]: r for r in table_by_header(page, "Profiling", "median")}
    assert overhead["on"]["Throughput median (texts/s)"] == fmt(
        result["scalene_overhead"]["on_texts_per_s"]["median"])

    summary = json.loads((run_dir / "summary.json").read_text())
    home = read_page(project / "site" / "index.html")
    headline = {r["Figure"]: r["Value"] for r in table_by_header(home, "Figure", "Value")}
    best = summary["studies"]["batch_size"]["best_throughput_texts_per_s"]
    assert headline["Best throughput"].startswith(fmt(best) + " texts/s")

    assert set(summary["studies"]) == set(STUDIES)
    # a quick build profiles every study in one process: one set of hotspots, shared
    hotspots = study["hotspots"]
    rows = hotspots["cpu_functions"] + hotspots["cpu_lines"] + hotspots["memory_lines"]
    assert hotspots["cpu_lines"] and not [r for r in rows if "threading" in r["file"]]
    assert {r["stage"] for r in hotspots["cpu_lines"]} & {"forward", "tokenize"}
    assert summary["bottlenecks"]
    assert {b["severity"] for b in summary["bottlenecks"]} <= {"high", "medium", "low"}

    optimizations = json.loads((run_dir / "optimizations.json").read_text())["result"]
    assert optimizations["batch_size"] == result["recommended_batch_size"]
    experiments = {e["name"]: e for e in optimizations["experiments"]}
    assert experiments["bf16"]["status"] == "measured"
    assert experiments["bf16"]["quality"]["cosine_mean"] > 0.999
    assert experiments["compile"]["status"] == "skipped"  # not under --quick
    best = summary["studies"]["optimizations"]["best"]
    if best:
        assert headline["Best configuration that keeps quality"].startswith(best["title"])
