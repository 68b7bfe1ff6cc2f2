"""The optimization experiments on the tiny model: rows, skips, efficiency, pages and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fmt, read_page, run_profiler, table_by_header

from profiler.config import Settings, Timing
from profiler.measure.flops import batch_flops, model_config
from profiler.model import load_model, resolve_model
from profiler.studies.base import StudyContext
from profiler.studies.optimizations import (
    OptimizationsStudy,
    flops_of,
    make_bench,
    run_variant,
    selected_variants,
)
from profiler.variants import FAMILIES, Skip, Variant, variants

TEXTS = [f"the river rose by {n} percent in the old city" for n in range(40)]
TIMING = Timing(warmup_repeats=0, min_time_s=0.0, min_repeats=3, max_repeats=3,
                texts_per_repeat=16, quality_texts=20)


def _context(tiny_model: Path, **settings: object) -> StudyContext:
    model, info = load_model(resolve_model(str(tiny_model)), "cpu")
    return StudyContext(model=model, info=info, texts=TEXTS,
                        settings=Settings(timing=TIMING, length_batch_size=4, **settings))


def test_every_family_has_a_variant_and_the_baseline_comes_first() -> None:
    found = variants(threads=4)
    assert found[0].name == "fp32"
    assert {v.family for v in found} == set(FAMILIES)
    assert [v.name for v in found if v.family == "threads"] == ["threads_1", "threads_2",
                                                                "threads_3"]


def test_selection_keeps_the_baseline(tiny_model: Path) -> None:
    ctx = _context(tiny_model, experiments=("bf16",))
    assert [v.name for v in selected_variants(ctx)] == ["fp32", "bf16"]


def test_baseline_and_bf16_rows(tiny_model: Path) -> None:
    result = OptimizationsStudy().run(_context(tiny_model, experiments=("bf16", "max_seq")))
    rows = {e["name"]: e for e in result["experiments"]}
    base, bf16 = rows["fp32"], rows["bf16"]
    assert base["status"] == "measured" and result["baseline_drift"] > 0
    # the baseline is compared with itself timed twice: first run's median over both runs'
    first = base["throughput_texts_per_s"]["median"]
    assert base["speedup"] == pytest.approx(first * bf16["speedup"]
                                            / bf16["throughput_texts_per_s"]["median"])
    assert base["quality"]["cosine_mean"] == pytest.approx(1.0)
    assert base["quality"]["neighbour_overlap_mean"] == pytest.approx(1.0)
    assert bf16["status"] == "measured"
    assert 0.99 < bf16["quality"]["cosine_mean"] < 1.0
    low, high = bf16["speedup_ci95"]
    assert low <= bf16["speedup"] <= high
    assert bf16["peak_dtype"] == "bfloat16" and bf16["peak_pct"] > 0
    # the tiny model stops at 64 tokens: neither truncation variant can run
    assert rows["max_seq_128"]["status"] == rows["max_seq_64"]["status"] == "skipped"
    assert "64 tokens" in rows["max_seq_64"]["reason"]
    assert result["batch_size"] == 4 and result["texts_per_repeat"] == 16


def test_a_skipped_variant_says_why_and_a_failing_one_does_not_stop_the_study(
        tiny_model: Path) -> None:
    ctx = _context(tiny_model)
    bench = make_bench(ctx, 4, {"float32": 100.0})

    def missing(_: StudyContext) -> object:
        raise Skip("onnxruntime is not installed: pip install onnxruntime onnx")

    def broken(_: StudyContext) -> object:
        raise RuntimeError("export failed\nsecond line")

    skipped = run_variant(ctx, Variant("onnx", "ONNX", "an export step", "", missing), bench)
    assert skipped.status == "skipped" and "pip install onnxruntime" in (skipped.reason or "")
    failed = run_variant(ctx, Variant("onnx", "ONNX", "an export step", "", broken), bench)
    assert failed.status == "failed" and failed.reason == "RuntimeError: export failed"


def test_quick_mode_skips_compile(tiny_model: Path) -> None:
    ctx = _context(tiny_model, quick=True)
    compile_variant = next(v for v in variants(2) if v.name == "compile")
    row = run_variant(ctx, compile_variant, make_bench(ctx, 4, {}))
    assert row.status == "skipped" and "--quick" in (row.reason or "")


def test_flops_count_padding_by_hand(tiny_model: Path) -> None:
    ctx = _context(tiny_model)
    tokenizer = ctx.model.tokenizer
    batch = ["rose", "the river rose by ten percent"]
    longest = max(len(ids) for ids in tokenizer(batch)["input_ids"])
    config = model_config(ctx.model)
    assert flops_of(ctx, [batch], None) == batch_flops(config, 2, longest)
    h, i, layers = 32, 64, 2
    per_token = layers * (8 * h * h + 4 * h * i + 4 * longest * h)
    assert flops_of(ctx, [batch], None) == 2 * longest * per_token
    assert flops_of(ctx, [batch], 3) == batch_flops(config, 2, 3)


def test_optimizations_page_and_recommendations(tiny_project: Path, tiny_model: Path) -> None:
    done = run_profiler("build", "--model", str(tiny_model), "--no-scalene", "--study",
                        "batch_size", "--study", "optimizations", "--experiment", "bf16",
                        "--experiment", "onnx", cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    run_dir = (tiny_project / "data" / "latest").resolve()
    result = json.loads((run_dir / "optimizations.json").read_text())["result"]
    batch = json.loads((run_dir / "batch_size.json").read_text())["result"]
    assert result["batch_size"] == batch["recommended_batch_size"]
    assert [e["name"] for e in result["experiments"]] == ["fp32", "bf16", "onnx"]
    assert [b["batch_size"] for b in result["batch_efficiency"]] == [2, 4, 8]

    page = read_page(tiny_project / "site" / "report" / "optimizations" / "index.html")
    rows = {r["Experiment"]: r for r in table_by_header(page, "Experiment", "Speedup")}
    for experiment in result["experiments"]:
        row = rows[experiment["title"]]
        assert row["Mean cosine"] == fmt(experiment["quality"]["cosine_mean"], 6)
        assert row["Speedup (95% interval)"].startswith(fmt(experiment["speedup"], 2))
    assert len(page.specs) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "recommendations" in summary and "not_recommended" in summary
    listed = len(summary["recommendations"]) + len(summary["not_recommended"])
    assert listed >= 2  # every measured non-baseline experiment is on one list or the other
    recs = read_page(tiny_project / "site" / "report" / "recommendations" / "index.html").text
    for rec in summary["recommendations"]:
        assert rec["title"] in recs


@pytest.mark.parametrize(("args", "message"), [
    (["--experiment", "warp_drive"], "error: unknown experiment 'warp_drive'"),
    (["--quality-threshold", "0"], "error: quality_threshold must be in (0, 1]"),
    (["--quality-threshold", "1.5"], "error: quality_threshold must be in (0, 1]"),
])
def test_bad_experiment_settings_are_one_line_errors(tiny_project: Path, tiny_model: Path,
                                                     args: list[str], message: str) -> None:
    done = run_profiler("build", "--model", str(tiny_model), *args, cwd=tiny_project)
    assert done.returncode != 0
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1
    assert not (tiny_project / "data" / "runs").exists()


def test_no_baseline_means_no_comparison(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import profiler.studies.optimizations as study

    def broken_baseline(_: StudyContext) -> object:
        raise RuntimeError("out of memory")

    real = study.variants

    def with_broken_baseline(threads: int) -> list[Variant]:
        found = real(threads)
        found[0] = Variant("fp32", "fp32 baseline", "none", "", broken_baseline)
        return found

    monkeypatch.setattr(study, "variants", with_broken_baseline)
    result = OptimizationsStudy().run(_context(tiny_model, experiments=("bf16",)))
    base, bf16 = result["experiments"]
    assert base["status"] == "failed" and "out of memory" in base["reason"]
    assert bf16["status"] == "skipped" and "baseline" in bf16["reason"]


def test_a_quick_build_uses_the_batch_study_of_the_same_process(tiny_model: Path,
                                                                tmp_path: Path) -> None:
    from dataclasses import replace

    from profiler.storage import write_json
    from profiler.studies.optimizations import earlier_batch_study

    ctx = replace(_context(tiny_model), run_dir=tmp_path)
    assert earlier_batch_study(ctx) is None
    write_json(tmp_path / "batch_size.partial.json",
               {"study": "batch_size", "result": {"recommended_batch_size": 2, "points": []}})
    study = earlier_batch_study(ctx)
    assert study is not None and study["recommended_batch_size"] == 2
