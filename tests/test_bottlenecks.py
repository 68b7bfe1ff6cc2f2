"""Bottleneck rules on golden JSON: impact, severity, evidence and ranking."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.bottlenecks import find_bottlenecks, severity_of

GOLDEN = Path(__file__).parent / "data" / "bottlenecks"


def _measured() -> dict[str, Any]:
    return json.loads((GOLDEN / "measured.json").read_text())


def test_golden_run_gives_the_expected_ranked_table() -> None:
    found = [b.to_dict() for b in find_bottlenecks(_measured())]
    assert found == json.loads((GOLDEN / "expected.json").read_text())


@pytest.mark.parametrize(("impact", "severity"), [(30.0, "high"), (29.99, "medium"),
                                                  (10.0, "medium"), (9.99, "low"), (0.0, "low")])
def test_severity_thresholds(impact: float, severity: str) -> None:
    assert severity_of(impact) == severity


def test_a_leak_is_high_whatever_its_size_and_ranks_by_impact() -> None:
    measured = _measured()
    measured["leak"] = {"leak": True, "rss_mb": [990.0, 1000.0],
                        "fit": {"slope": 0.05, "slope_ci95": [0.02, 0.08]},
                        "growth_mb_per_1000_iterations": 50.0}
    found = find_bottlenecks(measured)
    leak = next(b for b in found if b.study == "leak")
    assert leak.severity == "high" and leak.impact_pct == pytest.approx(5.0)
    assert "0.050 MB per iteration" in leak.evidence
    highs = [b for b in found if b.severity == "high"]
    assert highs[-1] is leak  # high, but the smallest high impact
    assert [b.impact_pct for b in highs] == sorted((b.impact_pct for b in highs), reverse=True)


def test_only_studies_that_ran_are_ranked() -> None:
    measured = _measured()
    assert [b.study for b in find_bottlenecks({"stages": measured["stages"]})] == ["stages"] * 2
    assert find_bottlenecks({}) == []


def test_a_flat_batch_curve_is_a_low_bottleneck() -> None:
    measured = copy.deepcopy(_measured())
    for point in measured["batch_size"]["points"]:
        point["throughput_texts_per_s"]["median"] = 150.0 + point["batch_size"] / 100
    choice = next(b for b in find_bottlenecks({"batch_size": measured["batch_size"]})
                  if b.title.startswith("Batch size"))
    assert choice.severity == "low" and choice.impact_pct < 2


def test_no_loss_is_no_bottleneck() -> None:
    measured = _measured()
    measured["text_length"]["points"][0]["throughput_texts_per_s"]["median"] = 2000.0
    assert not [b for b in find_bottlenecks(measured) if b.study == "text_length"]
