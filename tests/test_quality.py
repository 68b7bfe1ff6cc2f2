"""Embedding quality against a reference: cosines and nearest-neighbour overlap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS

from profiler.analysis import quality
from profiler.analysis.quality import (
    Criterion,
    Quality,
    cosine_to_reference,
    measure_quality,
    neighbour_ndcg,
    neighbour_overlap,
    pareto_front,
    similarity_spearman,
)
from profiler.studies.optimizations import Experiment, OptimizationsStudy


def at_angles(degrees: list[float], lengths: list[float]) -> np.ndarray:
    """2-D vectors at the given angles; lengths differ so nothing is pre-normalized."""
    radians = np.radians(degrees)
    return np.column_stack([np.cos(radians), np.sin(radians)]) * np.array(lengths)[:, None]


# Reference at 0, 20, 90, 150 degrees; the candidate moves text 1 from 20 to 60 degrees.
# k=1 neighbours (smallest angle to another text), worked on paper:
#   reference: 0 -> 1 (20°), 1 -> 0 (20° < 70°), 2 -> 3 (60° < 70°), 3 -> 2 (60°)
#   candidate: 0 -> 1 (60° < 90°), 1 -> 2 (30° < 60°), 2 -> 1 (30° < 60°), 3 -> 2 (60° < 90°)
# k=2: reference {1,2} {0,2} {3,1} {2,1}; candidate {1,2} {2,0} {1,3} {2,1}: all agree.
REFERENCE = at_angles([0, 20, 90, 150], [2.0, 1.0, 3.0, 0.5])
CANDIDATE = at_angles([0, 60, 90, 150], [1.0, 4.0, 1.0, 1.0])


def test_cosines_worked_by_hand() -> None:
    reference = np.array([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    candidate = np.array([[4.0, 3.0], [0.0, 2.0], [-2.0, -2.0], [1.0, 0.0], [5.0, 0.0]])
    # 24/25; orthogonal; opposite; zero vector scores 0 (no NaN); same direction, other length
    assert cosine_to_reference(reference, candidate) == pytest.approx([0.96, 0.0, -1.0, 0.0, 1.0])


def test_moved_text_lowers_its_cosine_and_k1_overlap() -> None:
    cosines = cosine_to_reference(REFERENCE, CANDIDATE)
    assert cosines == pytest.approx([1.0, np.cos(np.radians(40)), 1.0, 1.0])
    assert neighbour_overlap(REFERENCE, CANDIDATE, k=1) == pytest.approx([1.0, 0.0, 0.0, 1.0])
    assert neighbour_overlap(REFERENCE, CANDIDATE, k=2) == pytest.approx([1.0] * 4)


def test_measure_quality_summarizes_and_clips_k() -> None:
    result = measure_quality(REFERENCE, CANDIDATE, k=10)  # 4 texts: at most 3 neighbours
    assert result.neighbour_k == 3
    assert result.neighbour_overlap_mean == 1.0  # every other text is a neighbour at k = n - 1
    assert result.texts == 4
    assert result.cosine_mean == pytest.approx((3 + np.cos(np.radians(40))) / 4)
    assert result.cosine_min == pytest.approx(np.cos(np.radians(40)))
    # 1st percentile, linear between the two smallest of 4 values: min + 0.03 * (next - min)
    assert result.cosine_p01 == pytest.approx(0.97 * np.cos(np.radians(40)) + 0.03)
    assert measure_quality(REFERENCE, CANDIDATE, k=1).neighbour_overlap_mean == 0.5
    assert result.to_dict()["neighbour_k"] == 3


def test_identical_and_rescaled_embeddings_agree_fully() -> None:
    reference = np.random.default_rng(0).normal(size=(40, 8))
    scales = np.random.default_rng(1).uniform(0.1, 10.0, size=(40, 1))
    for candidate in (reference.copy(), reference * scales):
        result = measure_quality(reference, candidate, k=5)
        assert result.cosine_mean == pytest.approx(1.0)
        assert result.cosine_min == pytest.approx(1.0)
        assert result.neighbour_overlap_mean == 1.0


def test_rotation_keeps_neighbours_but_not_cosines() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(50, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    result = measure_quality(reference, reference @ rotation, k=5)
    assert result.neighbour_overlap_mean == pytest.approx(1.0)
    assert result.cosine_mean < 0.5


def test_permuted_rows_lose_both() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(50, 16))
    result = measure_quality(reference, reference[rng.permutation(50)], k=5)
    assert result.cosine_mean < 0.5
    assert result.neighbour_overlap_mean < 0.5  # chance level is about 5 / 49


def test_blocks_give_the_same_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    reference, candidate = rng.normal(size=(23, 6)), rng.normal(size=(23, 6))
    whole = neighbour_overlap(reference, candidate, k=4)
    monkeypatch.setattr(quality, "BLOCK_ROWS", 5)  # the last block holds 3 rows
    assert neighbour_overlap(reference, candidate, k=4) == pytest.approx(whole)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        measure_quality(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="equal shapes"):
        cosine_to_reference(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="2\\+ texts"):
        neighbour_overlap(np.ones((1, 4)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="k >= 1"):
        neighbour_overlap(REFERENCE, CANDIDATE, k=0)


def test_bfloat16_embeddings_are_close_but_not_equal(tiny_model: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    texts = [" ".join(WORDS[i:i + 3 + i % 7]) for i in range(len(WORDS))]
    model = SentenceTransformer(str(tiny_model), device="cpu")
    reference = model.encode(texts, convert_to_numpy=True)
    candidate = model.to(torch.bfloat16).encode(texts, convert_to_numpy=True)
    result = measure_quality(reference, np.asarray(candidate, dtype=np.float32), k=5)
    assert result.texts == len(texts)
    assert 0.99 < result.cosine_min <= result.cosine_mean < 1 - 1e-7
    assert result.neighbour_overlap_mean >= 0.8  # 1.0 on this seed: bf16 noise rarely reorders


def test_ndcg_weighs_where_in_the_top_k_an_outsider_ranks() -> None:
    # text 0's neighbours by reference: 1 (10°), 2 (30°), 3 (60°); k = 2 keeps {1, 2}.
    reference = at_angles([0, 10, 30, 60], [1.0] * 4)
    same_set = at_angles([0, 30, 10, 60], [1.0] * 4)  # 1 and 2 swap places: the same top 2
    outsider_first = at_angles([0, 40, 20, 5], [1.0] * 4)  # 3 ranks first, 2 second, 1 out
    discounts = [1.0, 1 / np.log2(3)]
    assert neighbour_overlap(reference, same_set, k=2)[0] == 1.0
    assert neighbour_ndcg(reference, same_set, k=2)[0] == pytest.approx(1.0)
    assert neighbour_overlap(reference, outsider_first, k=2)[0] == 0.5
    # relevant at rank 2 only: (1 / log2 3) / (1 + 1 / log2 3)
    assert neighbour_ndcg(reference, outsider_first, k=2)[0] == pytest.approx(
        discounts[1] / sum(discounts))


def test_spearman_of_pairwise_similarities() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8))
    assert similarity_spearman(vectors, vectors) == pytest.approx(1.0)
    assert similarity_spearman(vectors, 3.0 * vectors) == pytest.approx(1.0)  # lengths: no matter
    noisy = vectors + rng.normal(scale=0.5, size=vectors.shape)
    assert 0.3 < similarity_spearman(vectors, noisy) < 0.99
    sampled = similarity_spearman(vectors, noisy, max_pairs=100)  # 435 pairs, 100 drawn
    assert sampled != similarity_spearman(vectors, noisy) and 0.0 < sampled < 1.0
    assert measure_quality(vectors, noisy).spearman == similarity_spearman(vectors, noisy)


def _quality(cosine: float, recall: float) -> Quality:
    return Quality(cosine_mean=cosine, cosine_min=cosine, cosine_p01=cosine,
                   neighbour_overlap_mean=recall, neighbour_k=10, texts=300)


def test_the_criterion_needs_every_bound_and_says_which_it_missed() -> None:
    criterion = Criterion(cosine_mean=0.995, recall_at_k=0.95)
    assert criterion.missed(_quality(0.997, 0.96)) is None
    assert criterion.missed(_quality(0.997, 0.90)) == "recall@10 0.900 < 0.95"
    assert criterion.missed(_quality(0.99, 0.96)) == "mean cosine 0.9900 < 0.995"
    assert criterion.missed(_quality(0.995, 0.96)) is None  # bounds are inclusive
    assert criterion.missed(None) == "quality not measured"
    assert criterion.describe() == "mean cosine ≥ 0.995 and recall@10 ≥ 0.95"


def test_a_run_from_before_recall_was_a_bound_is_judged_by_its_cosine_alone() -> None:
    data = json.loads((Path(__file__).parent / "data" / "recommendations" /
                       "optimizations.json").read_text())
    data.pop("quality_criterion", None)
    older = OptimizationsStudy.read({**data, "quality_threshold": 0.999})
    assert older.criterion == Criterion(0.999, 0.0)
    assert older.to_dict()["quality_criterion"] == {"cosine_mean": 0.999, "recall_at_k": 0.0}
    criterion = Criterion(0.995, 0.95)
    newer = OptimizationsStudy.read({**data, "quality_criterion": criterion.to_dict()})
    assert newer.criterion == criterion


def _row(name: str, speedup: float, cosine: float, recall: float,
         status: str = "measured") -> Experiment:
    return Experiment(name=name, title=name.upper(), family=name, effort="one line", snippet="",
                      status=status, speedup=speedup, quality=_quality(cosine, recall))


def test_the_front_keeps_what_nothing_beats_and_walks_it_fastest_first() -> None:
    rows = [_row("fp32", 1.0, 1.0, 1.0), _row("bf16", 1.8, 0.99995, 0.997),
            _row("slow_bf16", 1.2, 0.9999, 0.99),  # bf16 is faster and better: off the front
            _row("int8", 2.3, 0.95, 0.87), _row("same_as_fp32", 0.9, 1.0, 1.0),
            _row("failed", 9.0, 0.0, 0.0, status="failed")]
    front = pareto_front(rows)
    assert [f["name"] for f in front] == ["int8", "bf16", "fp32"]
    assert front[0]["over"] == "BF16" and front[0]["gain_pct"] == pytest.approx(27.78)
    assert front[0]["recall_cost"] == pytest.approx(0.127)
    assert front[0]["cosine_cost"] == pytest.approx(0.04995)
    assert front[1]["gain_pct"] == pytest.approx(80.0) and front[-1]["over"] is None
    # faster than fp32 at a lower cosine, but it keeps every neighbour bf16 loses: on the front
    tradeoff = _row("keeps_neighbours", 1.1, 0.999, 1.0)
    assert "keeps_neighbours" in {f["name"] for f in pareto_front([*rows, tradeoff])}
    kept = _row("keeps_recall", 1.9, 0.99996, 0.998)  # faster and better than bf16 on all
    assert {f["name"] for f in pareto_front([*rows, kept])} == {"int8", "keeps_recall", "fp32"}
