"""Recommendation rules on golden JSON: noise, quality cost, priority, ranking and batch size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.analysis.recommendations import (
    best_configuration,
    not_recommended,
    priority_of,
    recommend,
    speedup_interval,
)

GOLDEN = Path(__file__).parent / "data" / "recommendations"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / name).read_text())
    return data


def _load_list(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((GOLDEN / name).read_text())
    return data


def _experiment(optimizations: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in optimizations["experiments"] if e["name"] == name)


def _names(optimizations: dict[str, Any], batch: dict[str, Any] | None = None) -> list[str]:
    return [r.experiment for r in recommend(optimizations, batch)]


def _batch(base: list[float], best: list[float]) -> dict[str, Any]:
    return {"recommended_batch_size": 64, "points": [
        {"batch_size": size, "throughput_texts_per_s": {"median": sorted(s)[len(s) // 2],
                                                        "samples": s}}
        for size, s in ((32, base), (64, best))]}


def test_golden_inputs_give_the_expected_ranked_list() -> None:
    found = [r.to_dict() for r in recommend(_load("optimizations.json"), _load("batch_size.json"))]
    assert found == _load_list("expected.json")


def test_rank_by_priority_before_gain() -> None:
    found = recommend(_load("optimizations.json"))
    assert [r.priority for r in found] == ["quick win", "medium term", "medium term",
                                           "long term", "long term"]
    # onnx_int8 gains the most (150%) but is a lossy export: it still comes after bf16 (50%)
    assert found[0].experiment == "bf16" and found[-2].experiment == "onnx_int8"
    assert found[-2].gain_pct > found[0].gain_pct


def test_a_gain_inside_the_noise_is_not_recommended() -> None:
    optimizations = _load("optimizations.json")
    assert "max_seq_128" not in _names(optimizations)
    _experiment(optimizations, "bf16")["speedup_ci95"] = [1.0, 2.0]  # low end exactly 1: noise
    assert "bf16" not in _names(optimizations)
    _experiment(optimizations, "bf16")["speedup_ci95"] = None
    assert "bf16" not in _names(optimizations)


def test_not_recommended_lists_each_measured_change_left_out_with_its_reason() -> None:
    assert not_recommended(_load("optimizations.json")) == [
        {"name": "threads_1", "title": "One intra-op thread", "speedup": 0.5,
         "speedup_ci95": [0.45, 0.55], "reason": "slower: 0.50×"},
        {"name": "max_seq_128", "title": "Truncate at 128 tokens", "speedup": 1.04,
         "speedup_ci95": [0.97, 1.1], "reason": "gain within noise: 1.04× (0.97–1.10)"},
    ]


def test_a_speedup_of_one_or_less_is_dropped_whatever_its_interval() -> None:
    optimizations = _load("optimizations.json")
    _experiment(optimizations, "bf16").update(speedup=1.0, speedup_ci95=[1.01, 1.02])
    assert "bf16" not in _names(optimizations)
    left_out = {e["name"]: e["reason"] for e in not_recommended(optimizations)}
    assert left_out["bf16"] == "no faster: 1.00×"


def test_a_lossy_change_is_recommended_with_its_cost_and_not_as_a_quick_win() -> None:
    lossy = next(r for r in recommend(_load("optimizations.json")) if r.experiment == "torch_int8")
    assert not lossy.lossless and lossy.priority == "medium term"
    assert lossy.quality_cost.startswith("mean cosine 0.9500 (min 0.900)")
    assert lossy.quality_cost.endswith("below the 0.999 threshold")


def test_skipped_and_failed_experiments_are_ignored() -> None:
    optimizations = _load("optimizations.json")
    left_out = [e["name"] for e in not_recommended(optimizations)]
    for name in ("openvino", "onnx_o4", "fp32"):
        assert name not in _names(optimizations) and name not in left_out
    best = best_configuration(optimizations)
    assert best is not None and best["name"] != "onnx_o4"  # failed, though fastest and lossless


@pytest.mark.parametrize(("cosine", "lossless", "priority"),
                         [(0.999, True, "medium term"), (0.99899, False, "long term")])
def test_the_quality_threshold_is_inclusive(cosine: float, lossless: bool, priority: str) -> None:
    optimizations = _load("optimizations.json")
    _experiment(optimizations, "onnx")["quality"]["cosine_mean"] = cosine
    onnx = next(r for r in recommend(optimizations) if r.experiment == "onnx")
    assert (onnx.lossless, onnx.priority) == (lossless, priority)


def test_a_change_without_quality_figures_counts_as_lossy() -> None:
    optimizations = _load("optimizations.json")
    _experiment(optimizations, "bf16")["quality"] = None
    bf16 = next(r for r in recommend(optimizations) if r.experiment == "bf16")
    assert (bf16.lossless, bf16.priority, bf16.quality_cost) == (False, "medium term",
                                                                  "not measured")


@pytest.mark.parametrize(("lossless", "effort", "priority"), [
    (True, "one line", "quick win"), (True, "a few lines", "medium term"),
    (True, "an export step", "medium term"), (True, "a compile step", "long term"),
    (False, "one line", "medium term"), (False, "a few lines", "long term"),
    (False, "an export step", "long term"), (False, "a compile step", "long term")])
def test_priority_rules(lossless: bool, effort: str, priority: str) -> None:
    assert priority_of(lossless, effort) == priority


def test_best_configuration_is_the_fastest_lossless_change() -> None:
    optimizations = _load("optimizations.json")
    assert best_configuration(optimizations) == {
        "name": "bf16", "title": "bfloat16 weights", "speedup": 1.5, "speedup_ci95": [1.4, 1.6],
        "cosine_mean": 0.99998,
        "snippet": "SentenceTransformer(model_name, model_kwargs={\"dtype\": torch.bfloat16})"}
    _experiment(optimizations, "bf16")["quality"]["cosine_mean"] = 0.998
    best = best_configuration(optimizations)
    assert best is not None and best["name"] == "onnx"  # 1.30×, lossless at exactly 0.999


def test_best_configuration_is_none_without_a_lossless_gain() -> None:
    optimizations = _load("optimizations.json")
    for name in ("bf16", "onnx", "compile"):
        _experiment(optimizations, name)["speedup_ci95"] = [0.9, 1.5]
    assert best_configuration(optimizations) is None


def test_no_batch_size_result_or_the_default_already_best_gives_no_batch_advice() -> None:
    optimizations = _load("optimizations.json")
    assert "batch_size" not in _names(optimizations)
    batch = _load("batch_size.json")
    batch["recommended_batch_size"] = 32
    assert "batch_size" not in _names(optimizations, batch)
    batch = _load("batch_size.json")
    batch["points"] = [p for p in batch["points"] if p["batch_size"] != 32]
    assert "batch_size" not in _names(optimizations, batch)


def test_a_batch_size_gain_within_noise_is_not_recommended() -> None:
    noisy = _batch([150.0, 200.0, 250.0, 190.0, 210.0], [180.0, 260.0, 205.0, 150.0, 230.0])
    assert "batch_size" not in _names(_load("optimizations.json"), noisy)


def test_a_clear_batch_size_gain_is_a_quick_win_with_its_interval() -> None:
    clear = _batch([195.0, 200.0, 205.0, 198.0, 202.0], [310.0, 320.0, 330.0, 315.0, 325.0])
    batch = next(r for r in recommend(_load("optimizations.json"), clear)
                 if r.experiment == "batch_size")
    assert batch.priority == "quick win" and batch.lossless and batch.gain_pct == 60.0
    low, high = batch.gain_ci95_pct
    assert 100 * (310 / 205 - 1) <= low <= 60.0 <= high <= 100 * (330 / 195 - 1)


def test_speedup_interval_of_constant_samples_is_the_ratio_exactly() -> None:
    assert speedup_interval([100.0] * 5, [150.0] * 7) == (1.5, 1.5)


def test_speedup_interval_of_a_clearly_faster_set_lies_above_one() -> None:
    base, fast = [98.0, 100.0, 102.0, 99.0, 101.0], [118.0, 120.0, 122.0, 119.0, 121.0]
    low, high = speedup_interval(base, fast)
    assert 118 / 102 <= low < 1.2 < high <= 122 / 98
    low, high = speedup_interval(fast, base)
    assert high < 1


def test_speedup_interval_is_reproducible_with_its_seed() -> None:
    base = [90.0 + i for i in range(20)]
    new = [100.0 + 1.3 * i for i in range(20)]
    assert speedup_interval(base, new, seed=3) == speedup_interval(base, new, seed=3)
    assert speedup_interval(base, new, seed=3) != speedup_interval(base, new, seed=4)


def test_speedup_interval_is_the_central_95_percent_of_bootstrapped_median_ratios() -> None:
    base = [90.0 + i for i in range(20)]
    new = [100.0 + 1.3 * i for i in range(20)]
    rng = np.random.default_rng(7)  # the definition spelled out: base drawn first, then new
    base_medians = np.median(rng.choice(base, size=(500, 20)), axis=1)
    ratios = np.median(rng.choice(new, size=(500, 20)), axis=1) / base_medians
    assert speedup_interval(base, new, rounds=500, seed=7) == pytest.approx(
        tuple(np.percentile(ratios, [2.5, 97.5])))


@pytest.mark.parametrize(("base", "new", "rounds"),
                         [([], [1.0], 10), ([1.0], [], 10), ([1.0], [1.0], 0), ([0.0], [1.0], 10)])
def test_speedup_interval_rejects_empty_or_zero_input(base: list[float], new: list[float],
                                                      rounds: int) -> None:
    with pytest.raises(ValueError, match="speedup interval"):
        speedup_interval(base, new, rounds=rounds)
