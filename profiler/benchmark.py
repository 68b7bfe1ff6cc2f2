"""Time `profiler build --quick` and the full build; check the headline against a plain call.

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
from typing import TYPE_CHECKING, Any

import click

from profiler.measure.stats import summarize
from profiler.rundir import SUMMARY, RunDir
from profiler.studies import STUDIES

if TYPE_CHECKING:
    from profiler.studies.batch_size import BatchSizeResult
    from profiler.studies.serving import ServingResult

# The quick build in 90 seconds, the full build in 6 minutes, the experiments within it.
TARGETS_S = {"quick": 90.0, "full": 360.0, "studies": 240.0, "optimizations": 120.0}


def timed_build(project: Path, *args: str) -> tuple[float, BatchSizeResult]:
    """Run `profiler build ARGS` in `project`; return wall seconds and the batch-size result.

    Prints how long each study's process took (from summary.json) and how precise its
    comparisons came out.
    """
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "profiler", "build", *args], cwd=project,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise click.ClickException(f"profiler build {' '.join(args)} failed: {done.stderr[-500:]}")
    latest = RunDir(project / "data" / "latest")
    per_study = latest.read(SUMMARY).get("seconds", {})
    if len(per_study) > 2:
        print_split(seconds, per_study, quick="--quick" in args)
    if "--study" not in args:
        print_precision(latest)
        print_serving(latest)
    return seconds, STUDIES["batch_size"].read_from(latest)


def print_serving(run: RunDir) -> None:
    """Capacity per batcher setting, and the simulation's capacity against the measured."""
    if not run.has_study("serving"):
        return
    result: ServingResult = STUDIES["serving"].read_from(run)
    slo = result.slo
    print(f"  serving: capacity at p{slo.percentile:g} <= {slo.target_ms:g} ms")
    for config in result.configs:
        for setting in config.settings:
            capacity = setting.capacity
            print(f"    {config.name:<10} {setting.label:<48} {capacity.rate_rps:8.1f} "
                  f"requests/s{'' if capacity.confirmed else ' (not confirmed)'}")
    prediction = result.prediction
    error = prediction.error
    print(f"    simulated {prediction.predicted_rps:.1f} against measured "
          f"{prediction.measured_rps:.1f} requests/s"
          + (f" ({100 * error:+.0f}%, tolerance ±{100 * prediction.tolerance:.0f}%"
             f" of the measured bracket: {'trusted' if prediction.trusted else 'not trusted'})"
             if error is not None else ""))
    for fleet in result.fleet:
        print(f"    replicas for {result.target_rps:,.0f} requests/s, {fleet.balance}: "
              f"{fleet.replicas}")


def print_precision(run: RunDir) -> None:
    """Each comparison's rounds, why they stopped, the A/A check and every speedup's interval."""
    for name in ("batch_size", "optimizations"):
        if not run.has_study(name):
            continue
        result = STUDIES[name].read_from(run)
        rounds, aa = result.rounds, result.aa
        if rounds:
            widths = [w for w in rounds.widths.values() if w is not None]
            print(f"  {name}: {rounds.rounds} rounds, stopped by {rounds.stopped_by}, "
                  f"widest interval ±{100 * max(widths, default=math.inf):.1f}% "
                  f"(target ±{100 * rounds.target:.1f}%)")
        if aa:
            print(f"    A/A {aa.speedup:.3f}× ({aa.ci95[0]:.3f}–{aa.ci95[1]:.3f}) "
                  f"{'passed' if aa.passed else 'FAILED'}")
        for row in getattr(result, "experiments", []):
            if row.speedup_ci95 and row.speedup:
                low, high = row.speedup_ci95
                print(f"    {row.name:<16} {row.speedup:.2f}× ({low:.2f}–{high:.2f}) "
                      f"±{50 * (high - low) / row.speedup:.1f}%")


def print_split(total_s: float, per_study: dict[str, float], quick: bool = False) -> None:
    """Split a build's time by study; a full one's, experiments against the rest."""
    for name, value in per_study.items():
        print(f"  {name:<30} {value:6.1f} s")
    if quick:
        return
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


PLAIN_SCRIPT = """
import json, sys, time
from sentence_transformers import SentenceTransformer
path, corpus, sizes, passes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
texts = [line for line in open(corpus, encoding="utf-8").read().splitlines() if line.strip()]
model = SentenceTransformer(path, device="cpu")
model.encode(texts[:8])
found = {}
for size in sizes:
    found[size] = []
    for _ in range(passes):
        start = time.perf_counter()
        model.encode(texts, batch_size=size)
        found[size].append(len(texts) / (time.perf_counter() - start))
print(json.dumps(found))
"""


def plain_encode(project: Path, sizes: list[int], passes: int) -> dict[int, list[float]]:
    """Time a plain script's `model.encode(corpus, batch_size=B)`: texts/s of each pass."""
    from profiler.model import resolve_model

    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2").path
    done = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, path,
                           str(project / "data" / "corpus.txt"), json.dumps(sizes), str(passes)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"the plain script failed: {done.stderr[-500:]}")
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def agreement(project: Path, sizes: list[int], pairs: int) -> list[tuple[Any, ...]]:
    """Alternate a plain script and a profiled build; compare bulk medians with the noise.

    Both encode the whole default corpus in one `model.encode` call per pass. Runs alternate
    (plain, build, plain, build…) so drift in the machine's speed hits both alike. The noise band
    is twice the combined coefficient of variation of the two pooled samples.
    """
    pooled: dict[str, dict[int, list[float]]] = {"build": {}, "plain": {}, "stream": {}}
    for _ in range(pairs):
        for size, samples in plain_encode(project, sizes, passes=3).items():
            pooled["plain"].setdefault(size, []).extend(samples)
        _, result = timed_build(project, "--study", "batch_size", "--no-site", "--batch-sizes",
                                ",".join(map(str, sizes)))
        for point in result.points:
            if point.batch_size in sizes:
                kind = "build" if point.workload == "bulk" else "stream"
                samples = point.throughput_texts_per_s.samples
                pooled[kind].setdefault(point.batch_size, []).extend(samples)
    rows = []
    for size in sizes:
        a, b = summarize(pooled["build"][size]), summarize(pooled["plain"][size])
        band, ratio = 2 * math.hypot(a.cv, b.cv), a.median / b.median
        stream = summarize(pooled["stream"][size]).median
        rows.append((size, a.median, b.median, ratio, band, abs(ratio - 1) <= band, stream))
    return rows


def print_agreement(project: Path, sizes: list[int]) -> None:
    """Print the profiled bulk headline against a plain script, and the stream beside them."""
    print("\nThroughput over the whole corpus (texts/s, median of pooled passes): the profiled")
    print("build's bulk headline against a plain script's model.encode(corpus, batch_size=B),")
    print("alternated, 2 pairs; the build's stream (arrival-order batches) for comparison:")
    print(f"{'batch':>6} {'bulk':>9} {'plain':>9} {'ratio':>7} {'noise':>7} {'agree':>6} "
          f"{'stream':>9}")
    for size, a, b, ratio, band, ok, stream in agreement(project, sizes, pairs=2):
        print(f"{size:>6} {a:>9.1f} {b:>9.1f} {ratio:>7.3f} {band:>6.1%} {ok!s:>6} {stream:>9.1f}")


@click.command()
@click.option("--quick-only", is_flag=True, help="Time only `profiler build --quick`.")
@click.option("--agreement-only", is_flag=True, help="Only compare the headline with a plain call.")
@click.option("--sizes", default="16,64,256", help="Batch sizes for the plain-call comparison.")
def main(quick_only: bool, agreement_only: bool, sizes: str) -> None:
    """Print build times against their targets and the headline-vs-plain comparison."""
    batch_sizes = [int(size) for size in sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="profiler-bench-") as tmp:
        project = copy_project(Path.cwd(), Path(tmp))
        if agreement_only:
            print_agreement(project, batch_sizes)
            return
        quick_s, _ = timed_build(project, "--quick")
        print(f"profiler build --quick: {quick_s:6.1f} s (target < {TARGETS_S['quick']:.0f} s)")
        if quick_only:
            return
        print("profiler build (full), seconds per study process:")
        full_s, profiled = timed_build(project)
        print(f"profiler build (full):  {full_s:6.1f} s (target < {TARGETS_S['full']:.0f} s)")
        print_agreement(project, batch_sizes)
        overhead = profiled.scalene_overhead
        if overhead is not None:
            print(f"\nScalene overhead with profiling on, batch {overhead.batch_size}: "
                  f"{overhead.overhead_pct:+.1f}%")


if __name__ == "__main__":
    main()
