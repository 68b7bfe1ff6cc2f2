"""The optimization experiments on the tiny model: rows, skips, efficiency, pages and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED
from helpers import fmt, read_page, run_profiler, table_by_header, typed

from profiler.analysis.quality import pareto_front
from profiler.analysis.recommendations import best_configuration
from profiler.backends.variants import FAMILIES, Skip, Variant, variants
from profiler.config import Settings, Timing
from profiler.measure.flops import batch_flops, flops_per_token, model_config
from profiler.model import load_model, resolve_model
from profiler.studies.base import StudyContext
from profiler.studies.optimizations import (
    Bench,
    Experiment,
    OptimizationsStudy,
    Prepared,
    make_bench,
    prepare_variant,
    sample_batches,
    selected_variants,
)
from profiler.workloads import (
    Encode,
    bulk_schedule,
    model_encode,
    request_of,
    spread,
    token_counts,
)

TEXTS = [f"the river rose by {n} percent in the old city" for n in range(40)]
TIMING = Timing(warmup_repeats=0, min_time_s=0.0, min_repeats=3, max_repeats=3,
                texts_per_repeat=16, quality_texts=20, workload_repeats=3, query_texts=10,
                search_texts=16, round_texts=16, max_rounds=3)


def prepare(ctx: StudyContext, variant: Variant, bench: Bench) -> Prepared | Experiment:
    """Build and search one variant, as the study does before its rounds."""
    with ExitStack() as stack:
        return prepare_variant(ctx, stack, variant, bench, 0, 1)


def _context(tiny_model: Path, **settings: Any) -> StudyContext:
    model, info = load_model(resolve_model(str(tiny_model)), "cpu")
    settings = {"batch_sizes": (2, 8), "request_size": 40, **settings}
    return StudyContext(model=model, info=info, texts=TEXTS,
                        settings=Settings(timing=TIMING, length_batch_size=4, **settings))


def test_every_family_has_a_variant_and_the_baseline_comes_first() -> None:
    found = variants(threads=4)
    assert found[0].name == "fp32"
    assert {v.family for v in found} == set(FAMILIES)
    assert [v.name for v in found if v.family == "threads"] == ["threads_1", "threads_2",
                                                                "threads_3"]
    # the plain call (batch 32, as a script would) is the baseline's family, at a fixed size
    plain = found[1]
    assert (plain.name, plain.family, plain.batch_size) == ("fp32_default", "fp32", 32)
    assert {v.name: v.family for v in found if v.family in ("onnx", "openvino")} == {
        "onnx": "onnx", "onnx_o2": "onnx", "openvino": "openvino", "openvino_bf16": "openvino",
        "st_onnx": "onnx", "st_openvino": "openvino"}
    assert all(v.batch_size is None for v in found if v.name != "fp32_default")


def test_single_queries_have_no_plain_batch_row_and_openvino_tunes_for_latency() -> None:
    bulk, query = variants(2, "bulk"), variants(2, "query")
    assert "fp32_default" in [v.name for v in bulk]
    assert "fp32_default" not in [v.name for v in query]
    snippet = {w: next(v.snippet for v in variants(2, w) if v.name == "openvino")
               for w in ("bulk", "stream", "query")}
    assert '"THROUGHPUT"' in snippet["bulk"]
    assert '"LATENCY"' in snippet["stream"] and '"LATENCY"' in snippet["query"]


def test_selection_keeps_the_baseline(tiny_model: Path) -> None:
    ctx = _context(tiny_model, experiments=("bf16",))
    assert [v.name for v in selected_variants(ctx)] == ["fp32", "fp32_default", "bf16"]
    ctx = _context(tiny_model, experiments=("openvino",), workload="query")
    assert [v.name for v in selected_variants(ctx)] == ["fp32", "openvino", "openvino_bf16",
                                                        "st_openvino"]


def test_sample_batches_are_evenly_spaced_whole_batches() -> None:
    schedule = [[4 * i + j for j in range(4)] for i in range(10)]
    assert sample_batches(schedule, 16) == [schedule[1], schedule[3], schedule[6], schedule[8]]
    assert sample_batches(schedule, 1000) == schedule  # never more than the schedule
    assert sample_batches([[0, 1, 2]], 1) == [[0, 1, 2]]  # at least one batch


def test_the_bench_is_the_chosen_workload_over_the_request(tiny_model: Path) -> None:
    ctx = _context(tiny_model)
    bulk = make_bench(ctx, {})
    assert bulk.workload == "bulk" and bulk.texts == request_of(TEXTS, 40)
    assert bulk.sizes == [2, 8, 32]  # the sizes asked for and sentence-transformers' default
    assert bulk.tokens == token_counts(ctx.model, bulk.texts, 64)
    assert (bulk.search_texts, bulk.round_texts, len(bulk.quality_texts)) == (16, 16, 20)
    query = make_bench(_context(tiny_model, workload="query"), {})
    assert query.sizes == [1] and query.texts == spread(request_of(TEXTS, 40), 10)


def test_baseline_and_bf16_rows(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import profiler.studies.optimizations as study

    monkeypatch.setattr(study, "PRUNE_BELOW", 0.0)  # bf16 on a CPU may be slow: time it anyway
    ctx = _context(tiny_model, experiments=("bf16", "max_seq"))
    result = OptimizationsStudy().run(ctx).to_dict()
    assert result["workload"] == "bulk" and result["texts"] == 40
    assert result["batch_sizes"] == [2, 8, 32] and result["search_texts"] == 16
    rows = {e["name"]: e for e in result["experiments"]}
    assert list(rows) == ["fp32", "fp32_default", "bf16", "max_seq_128", "max_seq_64"]
    # a size's search sample lasts as long as a round's share would with every configuration
    # asked for and fp32's twin (6); the rounds' shares, with those timed and the twin
    timed = sum(row["status"] == "measured" for row in rows.values()) + 1
    assert result["search_s"] == pytest.approx(1.5 * TIMING.budget_s / (2 * 3 * 6))
    assert result["rounds"]["share_s"] == pytest.approx(1.5 * TIMING.budget_s / (2 * 3 * timed))
    base, bf16 = rows["fp32"], rows["bf16"]
    assert base["status"] == "measured" and base["speedup"] == 1.0
    # every row was timed in the same rounds as fp32 and its A/A twin
    rounds = result["rounds"]["rounds"]
    assert rounds == 3 and result["rounds"]["stopped_by"] in ("precision", "max_rounds")
    assert result["aa"]["rounds"] == rounds
    assert result["aa"]["ci95"] == base["speedup_ci95"]
    samples = {name: rows[name]["throughput_texts_per_s"]["samples"] for name in ("fp32", "bf16")}
    ratios = [b / a for a, b in zip(samples["fp32"], samples["bf16"], strict=True)]
    assert bf16["speedup"] == pytest.approx(math.exp(sum(map(math.log, ratios)) / rounds))
    assert base["quality"]["cosine_mean"] == pytest.approx(1.0)
    assert base["quality"]["neighbour_overlap_mean"] == pytest.approx(1.0)
    assert bf16["status"] == "measured"
    assert 0.99 < bf16["quality"]["cosine_mean"] < 1.0
    low, high = bf16["speedup_ci95"]
    assert low <= bf16["speedup"] <= high
    assert bf16["peak_dtype"] == "bfloat16" and bf16["peak_pct"] > 0
    for row in (base, bf16):  # each at the fastest size of its own search, whole passes
        search = row["search_texts_per_s"]
        assert set(search) == {"2", "8", "32"}
        assert row["batch_size"] == int(max(search, key=lambda size: search[size]))
        assert row["workload"] == "bulk" and row["throughput_texts_per_s"]["n"] == 3
    plain = rows["fp32_default"]
    if base["batch_size"] == 32:
        assert plain["status"] == "skipped" and "already 32" in plain["reason"]
    else:
        assert plain["status"] == "measured" and plain["batch_size"] == 32
        assert set(plain["search_texts_per_s"]) == {"32"}
    # the tiny model already stops at 64 tokens: neither limit can apply
    assert rows["max_seq_128"]["status"] == rows["max_seq_64"]["status"] == "skipped"
    assert "64 tokens" in rows["max_seq_64"]["reason"]


def test_executed_and_useful_flops_follow_the_bulk_batches(tiny_model: Path) -> None:
    model, info = load_model(resolve_model(str(tiny_model)), "cpu")
    # lengths that differ a lot, so that padding shows in executed against useful FLOPs
    texts = [("the river rose " * (1 + i % 5)).strip() for i in range(40)]
    settings = Settings(timing=TIMING, batch_sizes=(2, 8), request_size=40)
    ctx = StudyContext(model=model, info=info, texts=texts, settings=settings)
    result = OptimizationsStudy().run(dataclasses.replace(
        ctx, settings=dataclasses.replace(settings, experiments=("fp32",)))).to_dict()
    base = result["experiments"][0]
    size, median = base["batch_size"], base["throughput_texts_per_s"]["median"]
    request = request_of(texts, 40)
    tokens = token_counts(ctx.model, request, 64)
    config = model_config(ctx.model)
    executed = sum(batch_flops(config, len(batch), max(tokens[i] for i in batch))
                   for batch in bulk_schedule(request, size))
    per_s = median / len(request) / 1e9
    useful = sum(count * flops_per_token(config, count) for count in tokens)
    assert base["gflops_per_s"] == pytest.approx(executed * per_s)
    assert base["useful_gflops_per_s"] == pytest.approx(useful * per_s)
    assert useful <= executed


def test_a_skipped_variant_says_why_and_a_failing_one_does_not_stop_the_study(
        tiny_model: Path) -> None:
    ctx = _context(tiny_model)
    bench = make_bench(ctx, {"float32": 100.0})

    def missing(_: StudyContext) -> object:
        raise Skip("onnxruntime is not installed: pip install onnxruntime onnx")

    def broken(_: StudyContext) -> object:
        raise RuntimeError("export failed\nsecond line")

    skipped = prepare(ctx, Variant("onnx", "ONNX", "an export step", "", missing), bench)
    assert isinstance(skipped, Experiment)
    assert skipped.status == "skipped" and "pip install onnxruntime" in (skipped.reason or "")
    failed = prepare(ctx, Variant("onnx", "ONNX", "an export step", "", broken), bench)
    assert isinstance(failed, Experiment)
    assert failed.status == "failed" and failed.reason == "RuntimeError: export failed"


def slowed(seconds_per_text: float) -> Any:
    """A variant build: the model's own encode, made `seconds_per_text` slower per text."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        encode = model_encode(ctx.model)

        def slow(texts: list[str], batch_size: int) -> Any:
            time.sleep(seconds_per_text * len(texts))
            return encode(texts, batch_size)
        yield slow
    return build


def test_a_variant_far_slower_on_the_search_sample_is_not_timed(tiny_model: Path) -> None:
    ctx = _context(tiny_model)
    bench = make_bench(ctx, {})
    base = prepare(ctx, variants(2)[0], bench)
    assert isinstance(base, Prepared) and bench.base_search is not None
    assert min(bench.base_search.values()) > 0
    slow = prepare(ctx, Variant("slow", "slow", "one line", "", slowed(0.2)), bench)
    assert isinstance(slow, Experiment)
    assert slow.status == "skipped" and "far slower" in (slow.reason or "")
    assert slow.throughput_texts_per_s is None
    # under a quarter of the baseline at the first size, the search stops there (a busy machine
    # can slow the baseline's own sample there, and then the search goes on to the next size)
    assert slow.search_texts_per_s is not None
    if slow.search_texts_per_s["2"] < 0.25 * bench.base_search[2]:
        assert set(slow.search_texts_per_s) == {"2"}


def test_the_plain_model_encode_row_is_timed_however_slow(tiny_model: Path) -> None:
    """fp32 at batch 32 is the reference every 'x plain model.encode' figure divides by."""
    ctx = _context(tiny_model)
    bench = make_bench(ctx, {})
    assert isinstance(prepare(ctx, variants(2)[0], bench), Prepared)
    assert bench.base_search is not None and bench.base_size is not None
    # as if the baseline's best size had been more than twice as fast as batch 32 (a GPU at
    # batch 256, say): the plain row is still the reference and must be measured
    bench.base_search = {size: 100 * value for size, value in bench.base_search.items()}
    bench.base_size = 8
    plain = prepare(ctx, variants(2)[1], bench)
    assert isinstance(plain, Prepared), plain
    assert plain.variant.name == "fp32_default" and plain.batch_size == 32


def test_quick_mode_skips_compile_and_the_second_backend_variants(tiny_model: Path) -> None:
    ctx = _context(tiny_model, quick=True)
    bench = make_bench(ctx, {})
    for name in ("compile", "onnx_o2", "openvino_bf16"):
        variant = next(v for v in variants(2) if v.name == name)
        row = prepare(ctx, variant, bench)
        assert isinstance(row, Experiment)
        assert row.status == "skipped" and "--quick" in (row.reason or ""), name


@SHARED
def test_optimizations_page_and_recommendations(bulk_build: Path) -> None:
    tiny_project = bulk_build  # every study, with the bf16 and onnx experiments
    run_dir = (tiny_project / "data" / "latest").resolve()
    result = json.loads((run_dir / "optimizations.json").read_text())["result"]
    assert result["workload"] == "bulk" and result["texts"] == 48
    assert result["batch_sizes"] == [2, 4, 8, 32]
    assert [e["name"] for e in result["experiments"]] == ["fp32", "fp32_default", "bf16",
                                                          "onnx", "onnx_o2", "st_onnx"]
    measured = [e for e in result["experiments"] if e["status"] == "measured"]
    assert measured[0]["name"] == "fp32"
    for experiment in measured:  # each at the best size of its own search
        search = experiment["search_texts_per_s"]
        assert experiment["batch_size"] == int(max(search, key=lambda size: search[size]))
        assert experiment["batch_size"] in result["batch_sizes"]

    page = read_page(tiny_project / "site" / "report" / "optimizations" / "index.html")
    rows = {r["Experiment"]: r for r in table_by_header(page, "Experiment", "Speedup")}
    assert set(rows) == {e["title"] for e in measured}
    for experiment in measured:
        row = rows[experiment["title"]]
        assert row["Batch size"] == str(experiment["batch_size"])
        assert row["Mean cosine"] == fmt(experiment["quality"]["cosine_mean"], 6)
        assert row["Speedup (95% interval)"].startswith(fmt(experiment["speedup"], 2))
    not_measured = {e["title"] for e in result["experiments"] if e not in measured}
    if not_measured:  # which rows are pruned depends on this CPU (bf16 units, say)
        left_out = table_by_header(page, "Experiment", "Why")
        assert {r["Experiment"] for r in left_out} == not_measured
    else:
        with pytest.raises(AssertionError, match="no table"):
            table_by_header(page, "Experiment", "Why")
    assert len(page.specs) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["studies"]["optimizations"]["workload"] == "bulk"
    assert "recommendations" in summary and "not_recommended" in summary
    listed = ({r["experiment"] for r in summary["recommendations"]}
              | {r["name"] for r in summary["not_recommended"]})
    # every measured change (not the fp32 rows) is on one list or the other
    assert {e["name"] for e in measured if e["family"] != "fp32"} <= listed
    recs = read_page(tiny_project / "site" / "report" / "recommendations" / "index.html").text
    for rec in summary["recommendations"]:
        assert rec["title"] in recs
    front = summary["studies"]["optimizations"]["front"]  # the speed-quality front, walked
    experiments = typed("optimizations", result).experiments
    assert [f["name"] for f in front] == [f["name"] for f in pareto_front(experiments)]
    if len(front) > 1:
        walked = table_by_header(page, "Configuration", "Against the next one down")
        assert [r["Configuration"] for r in walked] == [f["title"] for f in front]
        assert walked[-1]["Against the next one down"] == "the slowest on the front"


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

    def with_broken_baseline(threads: int, workload: str = "bulk") -> list[Variant]:
        found = real(threads, workload)
        found[0] = Variant("fp32", "fp32 baseline", "none", "", broken_baseline)
        return found

    monkeypatch.setattr(study, "variants", with_broken_baseline)
    result = OptimizationsStudy().run(_context(tiny_model, experiments=("bf16",))).to_dict()
    base, plain, bf16 = result["experiments"]
    assert base["status"] == "failed" and "out of memory" in base["reason"]
    assert result["rounds"] is None and result["aa"] is None
    for row in (plain, bf16):
        assert row["status"] == "skipped" and "baseline" in row["reason"]
        assert row["speedup"] is None
    assert best_configuration(OptimizationsStudy.read(result)) is None


def planted(per_text_s: float, noise: float = 0.0) -> Any:
    """A configuration that takes `per_text_s` a text and returns the model's embeddings, perturbed
    by `noise`: a test double at the encode boundary, its speed set by the test, not the CPU."""
    import numpy as np

    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        rows = dict(zip(ctx.texts, model_encode(ctx.model)(ctx.texts, 8), strict=True))
        rng = np.random.default_rng(0)

        def encode(texts: list[str], batch_size: int) -> Any:
            time.sleep(per_text_s * len(texts))
            found = np.stack([rows[text] for text in texts])
            return found + noise * rng.standard_normal(found.shape) if noise else found
        yield encode
    return build


def test_quick_and_full_agree_on_the_best_configuration(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same method, two budgets: both find the lossless 1.5× change and pass over the lossy one."""
    import profiler.studies.optimizations as study

    base = planted(0.003)
    monkeypatch.setattr(study, "variants_of", lambda ctx: [
        Variant("fp32", "fp32 baseline", "none", "model", base),
        Variant("fp32_default", "fp32 at 32", "none", "model.encode(texts)", base,
                batch_size=32, group="fp32"),
        Variant("faster", "a lossless change, 1.5x", "one line", "faster()", planted(0.002)),
        Variant("lossy", "a lossy change, 3x", "one line", "lossy()", planted(0.001, 0.5))])
    found = {}
    for quick in (False, True):
        timing = dataclasses.replace(TIMING, max_rounds=12 if quick else 24,
                                     precision=0.06 if quick else 0.03)
        ctx = dataclasses.replace(_context(tiny_model), settings=Settings(
            timing=timing, length_batch_size=4, batch_sizes=(2, 8), request_size=40, quick=quick))
        result = OptimizationsStudy().run(ctx)
        rows = {e.name: e for e in result.experiments}
        assert rows["lossy"].speedup > rows["faster"].speedup > 1.2
        assert rows["lossy"].quality.cosine_mean < 0.995
        found[quick] = best_configuration(result)
    assert found[False] is not None and found[True] is not None
    assert found[False]["name"] == found[True]["name"] == "faster"
    (low, high), (quick_low, _) = (found[q]["speedup_ci95"] for q in (False, True))
    assert low <= found[True]["speedup"] * 1.02 and found[True]["speedup"] <= high * 1.02
    assert quick_low < 1.5 and all(1.3 < found[q]["speedup"] < 1.6 for q in found)  # per-call
    # costs beside the planted sleeps keep the measured gain a little under 1.5


def test_each_size_of_the_search_is_sampled_for_about_a_rounds_share(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fake clock where a text costs 10 ms: each size's sample lasts about `search_s`, in
    whole batches, at least one and at most `search_texts` texts."""
    from profiler.studies.optimizations import search_batch_size

    clock = [0.0]
    monkeypatch.setattr("time.perf_counter", lambda: clock[0])
    encoded: list[tuple[int, int]] = []

    def encode(texts: list[str], batch_size: int) -> None:
        encoded.append((len(texts), batch_size))
        clock[0] += 0.01 * len(texts)

    ctx = _context(tiny_model, batch_sizes=(2, 4, 8))
    bench = make_bench(ctx, {})
    bench.search_texts, bench.search_s = 20, 0.06
    found = search_batch_size(ctx, encode, bench, None)
    assert set(found) == {2, 4, 8, 32}  # the default size is always searched
    assert found == pytest.approx({size: 100.0 for size in found}, rel=0.2)

    # after the warm-up call, 0.06 s at 100 texts/s: 3 batches of 2, 2 of 4 (whole batches),
    # then at least one batch of each larger size
    assert encoded[1:7] == [(2, 2)] * 3 + [(4, 4)] * 2 + [(8, 8)]
    assert len(encoded) == 8  # and one batch at 32
    bench.search_s, encoded[:] = 1.0, []  # a longer share: capped at search_texts
    search_batch_size(ctx, encode, bench, None)
    assert encoded[1:11] == [(2, 2)] * 10  # 20 texts, not 100
