"""The text-length and stage-breakdown studies on the tiny model, and their pure helpers."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED, copy_build
from helpers import fmt, read_page, run_cli, run_profiler, table_by_header

from profiler.config import Settings, Timing
from profiler.errors import ProfilerError
from profiler.model import load_model, resolve_model
from profiler.rundir import CONFIG, SUMMARY, RunDir
from profiler.studies.base import StudyContext
from profiler.studies.stages import STAGES, encode_in_stages, staged_encode
from profiler.studies.text_length import (
    LengthPoint,
    TextLengthStudy,
    correlations,
    texts_of_length,
    truncation_chars,
)

CORPUS = ["The river rose by ten percent in the old city.", "A new law was passed.",
          "Prices fell."]


def test_texts_are_cut_at_word_boundaries_near_the_target() -> None:
    words = set(" ".join(CORPUS).split())
    for target in (10, 30, 100):
        texts = texts_of_length(CORPUS, target, 8)
        assert len(texts) == 8
        for text in texts:
            assert len(text) <= target
            assert set(text.split()) <= words
        longest_word = max(len(w) for w in words)
        assert all(len(t) > target - longest_word - 1 for t in texts)


def test_a_word_longer_than_the_target_is_cut() -> None:
    assert texts_of_length(["extraordinarily"], 5, 2) == ["extra", "extra"]


def test_correlations_by_hand() -> None:
    result = correlations([1.0, 2.0, 3.0, 4.0], [10.0, 8.0, 4.0, 3.0])
    assert result["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [10, 8, 4, 3])[0, 1])
    assert result["spearman"] == pytest.approx(-1.0)
    assert correlations([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == {"pearson": None, "spearman": None}
    assert correlations([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])["spearman"] == pytest.approx(0.5)


def _point(chars: float, raw_tokens: float, truncated: float) -> LengthPoint:
    from profiler.measure.stats import summarize

    stats = summarize([1.0])
    return LengthPoint(target_chars=int(chars), mean_chars=chars, texts_per_repeat=1,
                       tokens_per_text_mean=raw_tokens, raw_tokens_per_text_mean=raw_tokens,
                       truncated_share=truncated, throughput_texts_per_s=stats,
                       tokens_per_s=1.0, batch_latency_ms=stats)


def test_truncation_length_from_characters_per_token() -> None:
    points = [_point(40, 10, 0.0), _point(80, 20, 0.0), _point(2000, 600, 1.0)]
    assert truncation_chars(points, 256) == pytest.approx(4.0 * 256)
    assert truncation_chars([_point(2000, 600, 1.0)], 256) is None


def test_corpus_too_small_for_the_longest_length() -> None:
    settings = Settings(text_lengths=(10, 5000))
    with pytest.raises(ProfilerError, match="too few"):
        TextLengthStudy.validate(settings, CORPUS)
    TextLengthStudy.validate(Settings(text_lengths=(10, 50)), CORPUS)


def test_stages_add_up_and_produce_the_same_embedding(tiny_model: Path) -> None:
    model, info = load_model(resolve_model(str(tiny_model)), "cpu")
    ctx = StudyContext(model=model, info=info, texts=CORPUS,
                       settings=Settings(timing=Timing(min_repeats=2)))
    start = time.perf_counter()
    laps, embeddings = staged_encode(ctx, CORPUS)
    wall = time.perf_counter() - start
    assert list(laps) == list(STAGES)
    assert all(seconds >= 0 for seconds in laps.values()) and laps["forward"] > 0
    assert 0.5 * wall <= sum(laps.values()) <= wall  # the stages cover the call, nothing twice
    assert embeddings == pytest.approx(model.encode(CORPUS, batch_size=len(CORPUS)), abs=1e-5)
    assert encode_in_stages(ctx, CORPUS[:2]).keys() == laps.keys()


@SHARED
def test_build_runs_the_new_studies_and_shows_their_numbers(bulk_build: Path) -> None:
    tiny_project = bulk_build
    run_dir = (tiny_project / "data" / "latest").resolve()

    length = json.loads((run_dir / "text_length.json").read_text())["result"]
    assert [p["target_chars"] for p in length["points"]] == [10, 100, 400]
    assert length["points"][-1]["truncated_share"] == 1.0  # 400 chars > 64 tokens
    assert length["points"][0]["truncated_share"] == 0.0
    assert length["truncation_chars"] is not None
    assert all(p["mean_chars"] <= p["target_chars"] for p in length["points"])

    stages = json.loads((run_dir / "stages.json").read_text())["result"]
    for point in stages["points"]:
        assert sum(point["stage_share"].values()) == pytest.approx(1.0)
        assert point["attributed_share"] > 0

    page = read_page(tiny_project / "site" / "report" / "text-length" / "index.html")
    rows = {r["Target length (chars)"]: r
            for r in table_by_header(page, "Target length (chars)", "Truncated")}
    for point in length["points"]:
        row = rows[str(point["target_chars"])]
        assert row["Throughput median (texts/s)"] == fmt(point["throughput_texts_per_s"]["median"])
        assert row["Truncated %"] == fmt(100 * point["truncated_share"])
    assert len(page.specs) == 2
    stage_page = read_page(tiny_project / "site" / "report" / "stages" / "index.html")
    stage_rows = {r["Batch size"]: r for r in table_by_header(stage_page, "Batch size", "forward")}
    for point in stages["points"]:
        assert stage_rows[str(point["batch_size"])]["forward %"] == fmt(
            100 * point["stage_share"]["forward"])


@SHARED
def test_a_study_left_out_of_a_run_says_so_on_its_page(bulk_build: Path, tmp_path: Path) -> None:
    project = copy_build(bulk_build, tmp_path / "project")
    run = RunDir((project / "data" / "latest").resolve())
    for name in (CONFIG, SUMMARY):  # the same run, as if built with --study text_length
        data = run.read(name)
        data["studies"] = ({"text_length": data["studies"]["text_length"]} if name == SUMMARY
                           else ["text_length"])
        run.write(name, {k: v for k, v in data.items() if k != "schema_version"})
    assert run_cli("render", cwd=project).returncode == 0
    batch_page = (project / "site" / "report" / "batch-size" / "index.html").read_text()
    assert "did not run the batch-size study" in batch_page
    assert "did not run" not in (project / "site" / "report" / "text-length" /
                                 "index.html").read_text()


def test_corpus_too_small_is_one_line_error(tiny_project: Path, tiny_model: Path) -> None:
    (tiny_project / "short.txt").write_text("A short text.\n", encoding="utf-8")
    done = run_profiler("build", "--model", str(tiny_model), "--corpus", "short.txt",
                        cwd=tiny_project)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("error: corpus has") and "Traceback" not in done.stderr
    assert not (tiny_project / "data" / "runs").exists()


def test_quick_measures_three_of_the_batch_sizes_and_the_default() -> None:
    from profiler.studies.base import quick_subset
    from profiler.studies.batch_size import measured_sizes

    sizes = (8, 16, 32, 64, 128, 256)
    assert measured_sizes(sizes) == [8, 16, 32, 64, 128, 256]
    assert measured_sizes(sizes, quick=True) == [8, 32, 64, 256]
    assert measured_sizes((4, 2), quick=True) == [2, 4, 32]
    assert quick_subset((1, 2, 3)) == (1, 2, 3)


class DriftingModel:
    """Costs (on a virtual clock) time proportional to its texts' characters, 0.5% more with
    every call: a machine that slows down steadily over the study."""

    def __init__(self) -> None:
        self.calls, self.last_cost = 0, 0.0

    def encode(self, texts: list[str], batch_size: int = 32) -> None:
        self.last_cost = 4e-6 * sum(map(len, texts)) * (1 + 0.005 * self.calls)
        self.calls += 1

    def tokenizer(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * (len(t) // 4 + 2) for t in texts]}


@pytest.mark.parametrize("lengths", [(10, 100, 400), (400, 10, 100)])
def test_text_lengths_are_timed_in_interleaved_rounds_that_cancel_drift(
        monkeypatch: pytest.MonkeyPatch, lengths: tuple[int, ...]) -> None:
    from types import SimpleNamespace

    model = DriftingModel()

    def virtual(fn: Any, device: str) -> float:  # the model's own cost, not the wall clock
        fn()
        return model.last_cost

    monkeypatch.setattr("profiler.studies.text_length.timed", virtual)
    timing = Timing(warmup_repeats=0, min_time_s=0.0, min_repeats=3, max_repeats=3,
                    texts_per_repeat=16, workload_repeats=4, max_rounds=12, precision=0.01,
                    budget_s=3.0)
    ctx = StudyContext(model=model, info=SimpleNamespace(device="cpu",  # type: ignore[arg-type]
                       max_seq_length=64), texts=CORPUS * 20,
                       settings=Settings(text_lengths=lengths, length_batch_size=4,
                                         timing=timing))
    result = TextLengthStudy().run(ctx).to_dict()
    assert [p["target_chars"] for p in result["points"]] == [10, 100, 400]  # in any order given
    rounds = result["rounds"]["rounds"]
    assert rounds >= 4 and result["rounds"]["stopped_by"] in ("precision", "budget", "max_rounds")
    assert all(p["throughput_texts_per_s"]["n"] == rounds for p in result["points"])
    short, long = result["points"][0], result["points"][-1]
    truth = long["mean_chars"] / short["mean_chars"]  # per-text cost: characters, no overhead
    low, high = result["slowdown"]["ci95"]
    assert result["slowdown"]["estimate"] == pytest.approx(truth, rel=0.03)
    assert low <= result["slowdown"]["estimate"] <= high
    headline = TextLengthStudy.headline(TextLengthStudy.read(result))
    assert headline["slowdown_x"] == result["slowdown"]["estimate"]
    assert headline["slowdown_ci95"] == [low, high]
    metrics = TextLengthStudy.metrics(TextLengthStudy.read(result))
    assert [len(m.samples) for m in metrics] == [rounds, rounds]  # the gate's samples: rounds


def test_a_length_whose_pass_is_too_short_gets_whole_batches_more() -> None:
    from profiler.studies.text_length import Length, stretch

    runner = Length(50, texts_of_length(CORPUS * 20, 50, 8), 4, DriftingModel().encode, "cpu")
    assert not stretch(runner, rate=10.0, corpus=CORPUS * 20, min_time_s=0.5)  # 0.8 s: enough
    assert stretch(runner, rate=1000.0, corpus=CORPUS * 20, min_time_s=0.1)  # 8 ms: 12.5x more
    assert len(runner.texts) == 4 * math.ceil(2 * 0.1 / 0.008)
    assert all(len(t) <= 50 for t in runner.texts)


@pytest.mark.parametrize("under_scalene", [False, True])
def test_a_profile_only_block_runs_only_under_scalene(under_scalene: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from scalene import scalene_profiler

    from profiler.studies.base import Profiling

    events: list[str] = []  # Scalene's switches are the boundary: record them, start nothing
    monkeypatch.setattr(scalene_profiler, "start", lambda: events.append("start"))
    monkeypatch.setattr(scalene_profiler, "stop", lambda: events.append("stop"))
    Profiling(under_scalene=under_scalene).view(lambda: events.append("work"))
    assert events == (["start", "work", "stop"] if under_scalene else [])
