"""Time `profiler build --quick` and the full build; check Scalene leaves the headline alone.

Run alone on the machine: `python -m profiler.benchmark [--quick-only]`. It builds in a temporary
copy of the project, so data/ and site/ here are untouched. Prints figures; asserts nothing.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from profiler.measure.stats import summarize

# Every study but the optimization experiments in 6 minutes; the experiments add at most 3.
TARGETS_S = {"quick": 120.0, "full": 540.0, "studies": 360.0, "optimizations": 180.0}


def timed_build(project: Path, *args: str) -> tuple[float, dict[str, Any]]:
    """Run `profiler build ARGS` in `project`; return wall seconds and the batch-size result.

    Prints how long each study's process took (from summary.json).
    """
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "profiler", "build", *args], cwd=project,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise click.ClickException(f"profiler build {' '.join(args)} failed: {done.stderr[-500:]}")
    latest = project / "data" / "latest"
    per_study = json.loads((latest / "summary.json").read_text()).get("seconds", {})
    if len(per_study) > 2 and "--quick" not in args:
        print_split(seconds, per_study)
    study = json.loads((latest / "batch_size.json").read_text())
    return seconds, study["result"]


def print_split(total_s: float, per_study: dict[str, float]) -> None:
    """Split a full build's time: the optimization experiments against everything else."""
    for name, value in per_study.items():
        print(f"  {name:<14} {value:6.1f} s")
    experiments = per_study.get("optimizations") or 0.0
    print(f"  everything but the experiments: {total_s - experiments:6.1f} s "
          f"(target < {TARGETS_S['studies']:.0f} s)")
    print(f"  optimization experiments:       {experiments:6.1f} s "
          f"(target < {TARGETS_S['optimizations']:.0f} s)")


def copy_project(root: Path, target: Path) -> Path:
    """Copy what a build needs (no results, no site) into `target`."""
    for name in ("templates", "docs"):
        shutil.copytree(root / name, target / name, ignore=shutil.ignore_patterns("report"))
    shutil.copy2(root / "mkdocs.yml", target / "mkdocs.yml")
    (target / "data").mkdir()
    shutil.copy2(root / "data" / "corpus.txt", target / "data" / "corpus.txt")
    return target


def agreement(project: Path, sizes: str, pairs: int) -> list[tuple[Any, ...]]:
    """Alternate plain and Scalene builds; per batch size compare pooled medians with the noise.

    Builds alternate (plain, Scalene, plain, …) so drift in the machine's speed hits both alike.
    The noise band is twice the combined coefficient of variation of the two pooled samples.
    """
    pooled: dict[str, dict[int, list[float]]] = {"scalene": {}, "plain": {}}
    for _ in range(pairs):
        for kind, extra in (("plain", ("--no-scalene",)), ("scalene", ())):
            _, result = timed_build(project, "--study", "batch_size", "--batch-sizes", sizes,
                                    "--no-site", *extra)
            for point in result["points"]:
                samples = point["throughput_texts_per_s"]["samples"]
                pooled[kind].setdefault(point["batch_size"], []).extend(samples)
    rows = []
    for size, profiled in pooled["scalene"].items():
        a, b = summarize(profiled), summarize(pooled["plain"][size])
        band, ratio = 2 * math.hypot(a.cv, b.cv), a.median / b.median
        rows.append((size, a.median, b.median, ratio, band, abs(ratio - 1) <= band))
    return rows


@click.command()
@click.option("--quick-only", is_flag=True, help="Time only `profiler build --quick`.")
def main(quick_only: bool) -> None:
    """Print build times against their targets and the profiled-vs-plain comparison."""
    with tempfile.TemporaryDirectory(prefix="profiler-bench-") as tmp:
        project = copy_project(Path.cwd(), Path(tmp))
        quick_s, _ = timed_build(project, "--quick")
        print(f"profiler build --quick: {quick_s:6.1f} s (target < {TARGETS_S['quick']:.0f} s)")
        if quick_only:
            return
        print("profiler build (full), seconds per study process:")
        full_s, profiled = timed_build(project)
        print(f"profiler build (full):  {full_s:6.1f} s (target < {TARGETS_S['full']:.0f} s)")
        print("\nThroughput (texts/s, median of pooled repeats), Scalene process with profiling")
        print("off vs a plain process; builds alternated, 2 pairs:")
        print(f"{'batch':>6} {'scalene':>10} {'plain':>10} {'ratio':>7} {'noise':>7}  agree")
        for size, a, b, ratio, band, ok in agreement(project, "16,128", pairs=2):
            print(f"{size:>6} {a:>10.1f} {b:>10.1f} {ratio:>7.3f} {band:>6.1%}  {ok}")
        overhead = profiled["scalene_overhead"]
        print(f"\nScalene overhead with profiling on, batch {overhead['batch_size']}: "
              f"{overhead['overhead_pct']:+.1f}%")


if __name__ == "__main__":
    main()
