"""The memory study and the leak check on the tiny model, and the fits behind their verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SHARED
from helpers import fmt, read_page, run_cli, table_by_header

from profiler.config import Settings, Timing
from profiler.measure.fit import linear_fit
from profiler.measure.memory import PeakRss
from profiler.model import load_model, resolve_model
from profiler.runner.probes import start_early
from profiler.studies.base import StudyContext
from profiler.studies.leak import judge
from profiler.studies.memory import MemoryPoint, MemoryStudy, ProbeFailure, probe

TEXTS = [f"the river rose by {n} percent in the old city and the law was passed" * 3
         for n in range(40)]
LEAK_TIMING = Timing(leak_iterations=10, leak_warmup=2, leak_texts=32)

# the module-scoped leak checks are built once: the tests reading them run on one worker
# (a module-wide group would pull the shared-build test off the shared build's worker)
LEAK_CHECKS = pytest.mark.xdist_group("leak_checks")


class KeepEveryOutput(torch.nn.Module):
    """A planted leak: a module that keeps a reference to every batch's output."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[dict[str, Any]] = []

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        self.kept.append(features)
        return features


def _context(tiny_model: Path, timing: Timing) -> StudyContext:
    model, info = load_model(resolve_model(str(tiny_model)), "cpu")
    return StudyContext(model=model, info=info, texts=TEXTS,
                        settings=Settings(timing=timing, length_batch_size=4))


def test_linear_fit_by_hand() -> None:
    fit = linear_fit([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])
    assert fit.slope == pytest.approx(2.0) and fit.intercept == pytest.approx(1.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.slope_ci95 is not None
    assert fit.slope_ci95[0] == pytest.approx(2.0) and fit.slope_ci95[1] == pytest.approx(2.0)
    noisy = linear_fit([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 1.0, 3.0, 2.0])
    assert noisy.slope == pytest.approx(0.5)
    assert noisy.slope_ci95 is not None
    # residuals -0.6, 0.9, -0.6, 0.9, -0.6: SSE 2.7; stderr sqrt(2.7 / 3 / 10); t(0.975, 3) 3.182
    half = 3.182446 * 0.3
    assert noisy.slope_ci95[0] == pytest.approx(0.5 - half, rel=1e-4)
    with pytest.raises(ValueError):
        linear_fit([1.0, 1.0], [2.0, 3.0])


def test_judge_flags_steady_growth_but_not_warm_up_growth() -> None:
    rising = [100.0 + 0.8 * i + (0.05 if i % 2 else 0.0) for i in range(10)]
    assert judge(rising, 0.05).leak
    warm_then_flat = [100.0, 104.0, 107.0, 109.0, 110.0, 110.0, 110.0, 110.1, 110.0, 110.0]
    verdict = judge(warm_then_flat, 0.05)
    assert not verdict.leak and verdict.steady_from == 5
    noisy_flat = [500.0, 510.0, 495.0, 505.0, 500.0, 512.0, 498.0, 503.0, 507.0, 499.0]
    assert not judge(noisy_flat, 0.05).leak
    assert not judge([100.0 + 0.01 * i for i in range(10)], 0.05).leak  # below the threshold


LEAK_SCRIPT = """
import json, sys, torch
sys.path.insert(0, sys.argv[2])
from test_memory_leak import KeepEveryOutput, LEAK_TIMING, TEXTS
from profiler.config import Settings
from profiler.model import load_model, resolve_model
from profiler.studies.base import StudyContext
from profiler.studies.leak import LeakStudy
model, info = load_model(resolve_model(sys.argv[1]), "cpu")
ctx = StudyContext(model=model, info=info, texts=TEXTS,
                   settings=Settings(timing=LEAK_TIMING, length_batch_size=4))
found = {"clean": LeakStudy().run(ctx).to_dict()}
model.append(KeepEveryOutput())  # the same model, now keeping every output it makes
found["leaky"] = LeakStudy().run(ctx).to_dict()
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def leak_checks(tiny_model: Path) -> dict[str, dict[str, Any]]:
    """The leak check on the clean tiny model, then with a planted leak, in one fresh process
    (as a build runs it: pytest's heap is not a baseline)."""
    done = subprocess.run([sys.executable, "-c", LEAK_SCRIPT, str(tiny_model),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          check=True, timeout=600)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@LEAK_CHECKS
def test_leak_check_flags_a_planted_leak(leak_checks: dict[str, dict[str, Any]]) -> None:
    result = leak_checks["leaky"]
    assert result["leak"] is True
    assert result["fit"]["slope"] > 0.05
    assert len(result["rss_mb"]) == 10 and len(result["warmup_rss_mb"]) == 2


@LEAK_CHECKS
def test_leak_check_passes_the_clean_tiny_model(leak_checks: dict[str, dict[str, Any]]) -> None:
    result = leak_checks["clean"]
    assert result["leak"] is False
    assert result["steady_from"] == 5 and result["fit"]["n"] == 5


def test_peak_sampler_runs_at_100_hz_or_more() -> None:
    with PeakRss(hz=200) as sampler:
        block = bytearray(64 * 1024 * 1024)
        time.sleep(0.5)
        del block
    assert sampler.rate_hz >= 100
    assert sampler.increase_mb > 50


def test_memory_probe_in_a_fresh_process(tiny_model: Path) -> None:
    # enough texts that encoding outlasts many 5 ms sampling intervals, even on a fast machine
    ctx = _context(tiny_model, Timing(texts_per_repeat=2000))
    started = start_early(["memory"], (8, 4, 2), quick=True)  # as the worker starts them
    assert sorted(started) == [2, 8]  # --quick probes the smallest and the largest
    assert start_early(["leak", "stages"], (8,), quick=False) == {}
    started[2].process.terminate()  # a probe that dies before its request: a failed size
    for waited in (started[2], started[8], started[8]):  # the study waits again: at once
        waited.wait_ready()
    assert started[8].process.poll() is None  # imported, and waiting for its request
    point = probe(ctx, 8, started[8])
    assert started[8].process.returncode == 0
    failed = probe(ctx, 2, started[2])
    assert isinstance(failed, ProbeFailure) and not failed.out_of_memory
    assert isinstance(point, MemoryPoint)
    assert point.batch_size == 8 and point.texts == 2000
    assert point.encode_s > 0.05 and point.sample_rate_hz > 0
    assert point.rss_start_mb < point.rss_before_load_mb <= point.rss_after_load_mb
    assert point.peak_rss_mb >= point.rss_after_load_mb
    assert point.peak_increase_mb == pytest.approx(point.peak_rss_mb - point.rss_after_load_mb)
    # the kernel's mark covers the peak (on Linux it also keeps the parent's size at exec)
    assert point.ru_maxrss_mb >= point.peak_rss_mb - 1.0
    assert point.samples >= 1 and point.cuda_memory_mb is None


@SHARED
def test_memory_and_leak_pages_show_their_figures(bulk_build: Path) -> None:
    tiny_project = bulk_build
    run_dir = (tiny_project / "data" / "latest").resolve()
    memory = json.loads((run_dir / "memory.json").read_text())["result"]
    assert [p["batch_size"] for p in memory["points"]] == [2, 4, 8]
    assert memory["fit"]["n"] == 3
    page = read_page(tiny_project / "site" / "report" / "memory" / "index.html")
    rows = {r["Batch size"]: r for r in table_by_header(page, "Batch size", "Peak increase")}
    for point in memory["points"]:
        assert rows[str(point["batch_size"])]["Peak increase"] == fmt(point["peak_increase_mb"])
    assert len(page.specs) == 2

    leak = json.loads((run_dir / "leak.json").read_text())["result"]
    assert len(leak["rss_mb"]) == 6
    leak_page = read_page(tiny_project / "site" / "report" / "leak" / "index.html")
    assert ("NO LEAK" if not leak["leak"] else "LEAK") in leak_page.text
    iterations = table_by_header(leak_page, "Iteration", "RSS")
    assert [r["RSS (MB)"] for r in iterations[-6:]] == [fmt(mb, 2) for mb in leak["rss_mb"]]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["studies"]["leak"]["leak"] == leak["leak"]
    assert summary["studies"]["memory"]["mb_per_text"] == pytest.approx(memory["fit"]["slope"])


@pytest.mark.parametrize("setting", ["leak_iterations = 0", "leak_iterations = 5",
                                     "leak_iterations = 'many'", "leak_texts = -3",
                                     "leak_warmup = 1.5"])
def test_bad_iteration_counts_are_one_line_errors(tiny_project: Path, tiny_model: Path,
                                                  setting: str) -> None:
    config = tiny_project / "profiler.toml"
    key = setting.split(" = ")[0]
    lines = [line for line in config.read_text().splitlines() if not line.startswith(key)]
    config.write_text("\n".join([*lines, setting]) + "\n")
    done = run_cli("build", "--model", str(tiny_model), cwd=tiny_project)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: timing.leak_")
    assert not (tiny_project / "data" / "runs").exists()


def test_memory_and_leak_are_registered_and_selectable() -> None:
    from profiler.studies import STUDIES

    assert STUDIES["memory"] is MemoryStudy
    assert Settings(studies=("memory", "leak")).studies == ("memory", "leak")


def test_a_frozen_warm_up_still_frees_each_iterations_cycles() -> None:
    import gc
    import weakref

    from profiler.studies.leak import frozen

    class Node:
        partner: object = None

    with frozen():  # what the warm-up left is out of the scans ...
        assert gc.get_freeze_count() > 0
        node = Node()
        node.partner = node  # ... and a cycle made afterwards is still collected
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
    assert gc.get_freeze_count() == 0  # the next study's collections see everything again


def test_probes_get_the_builds_environment_back_from_scalenes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import json as json_module

    from profiler.runner.probes import PLAIN_ENV, build_env, plain_env

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin")
    saved = build_env()  # what the build passes its study processes
    assert json_module.loads(saved)["LD_PRELOAD"] is None
    assert plain_env().get("LD_PRELOAD") is None  # no build passed anything: unchanged
    monkeypatch.setenv("LD_PRELOAD", "/x/libscalene.so")  # what Scalene's launcher sets
    monkeypatch.setenv("PATH", "/tmp/scalene-alias:/usr/bin")
    assert plain_env()["LD_PRELOAD"] == "/x/libscalene.so"
    monkeypatch.setenv(PLAIN_ENV, saved)
    env = plain_env()
    assert "LD_PRELOAD" not in env and env["PATH"] == "/usr/bin"
    assert env[PLAIN_ENV] == saved  # the rest of the environment stays
