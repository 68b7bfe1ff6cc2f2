"""After a build: record the run in the history, judge it, confirm suspects, gate CI.

measure -> data/runs/<id>/*.json -> record (history.json) -> comparisons (comparison.json)
A history or baseline file that cannot be read is left as it is: the run still gets its report,
which says why there is no comparison.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.compare import Comparison, compare_runs
from profiler.analysis.verdicts import statistic
from profiler.config import Settings
from profiler.errors import ProfilerError
from profiler.history.store import (
    BASELINE_FILE,
    HISTORY_FILE,
    append_run,
    describe,
    find_record,
    fingerprint,
    load_history,
    load_record,
    record_of,
    save_baseline,
)
from profiler.measure.metrics import Metric, bounded
from profiler.measure.validity import rechecked
from profiler.rundir import CALIBRATION, COMPARISON, CONFIG, CONFIRMED, RunDir
from profiler.studies import STUDIES

SUSPECT = ("REGRESSED", "INCONCLUSIVE")


@dataclass(frozen=True)
class Tracked:
    """What the history step found: the comparisons, and any file it could not use."""

    comparisons: list[Comparison]
    problems: list[str]
    removed: list[str]
    confirmed: dict[str, Any] | None = None
    history_ok: bool = True  # False: data/history.json could not be read and was left alone

    @property
    def regressed(self) -> bool:
        """Whether any metric of any comparison came out REGRESSED."""
        return any(c.regressed for c in self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        """Return what comparison.json holds."""
        return {"comparisons": [c.to_dict() for c in self.comparisons],
                "problems": self.problems, "removed_from_history": self.removed,
                "confirmed": self.confirmed}


def run_metrics(run_dir: Path, studies: list[str]) -> list[Metric]:
    """Every study's headline metrics, with samples, from its JSON in `run_dir`."""
    found: list[Metric] = []
    run = RunDir(run_dir)
    for name in studies:
        if run.has_study(name):
            found += STUDIES[name].metrics(STUDIES[name].read_from(run))
    return found


def run_record(run_dir: Path) -> dict[str, Any]:
    """The history record of the complete run in `run_dir`."""
    run = RunDir(run_dir)
    config = run.read(CONFIG)
    gflops = run.read(CALIBRATION)["gflops"] if run.has(CALIBRATION) else []
    record = record_of(run_dir, run_metrics(run_dir, config["studies"]), gflops,
                       config["model_source"].get("sha256"))
    if run.confirm.has(CONFIRMED):  # --confirm re-measured some studies: samples are pooled
        record = pooled(record, [Metric.from_dict(m)
                                 for m in run.confirm.read(CONFIRMED)["metrics"]])
    return record


def track_run(data: Path, run_dir: Path, settings: Settings) -> Tracked:
    """Append the run to the history and judge it against the baseline and the previous run."""
    record, problems = run_record(run_dir), []
    try:
        history = load_history(data / HISTORY_FILE)
    except ProfilerError as exc:
        history, problems = [], [f"{exc}; the history was left as it is and not compared"]
    removed: list[str] = []
    if not problems:
        removed = append_run(data / HISTORY_FILE, record, settings.history_cap)
    comparisons, found = judge_run(data, record, history, settings.margins)
    tracked = Tracked(comparisons, problems + found, removed, history_ok=not problems)
    RunDir(run_dir).write(COMPARISON, tracked.to_dict())
    return tracked


def judge_run(data: Path, record: dict[str, Any], history: list[dict[str, Any]],
              margins: dict[str, float]) -> tuple[list[Comparison], list[str]]:
    """Comparisons of `record` with the baseline (if pinned) and the previous comparable run."""
    comparisons, problems = [], []
    baseline = data / BASELINE_FILE
    if baseline.exists():
        try:
            pinned = load_record(baseline)
        except ProfilerError as exc:
            problems.append(f"{exc}; the baseline was left as it is and not compared")
        else:
            if pinned["run_id"] != record["run_id"]:
                comparisons.append(compare_runs(pinned, record, history, "baseline", margins))
    earlier = [r for r in history if r["created"] < record["created"]]
    same = [r for r in earlier if fingerprint(r) == fingerprint(record)]
    previous = same[-1] if same else earlier[-1] if earlier else None
    if previous is not None:
        comparisons.append(compare_runs(previous, record, history, "previous", margins))
    return comparisons, problems


def suspects(tracked: Tracked) -> list[str]:
    """Studies with a metric REGRESSED or INCONCLUSIVE in a comparison that was judged."""
    found = {row["study"] for c in tracked.comparisons if c.comparable for row in c.rows
             if row.get("state") in SUSPECT}
    return [name for name in STUDIES if name in found]


def confirm_run(data: Path, run_dir: Path, settings: Settings, tracked: Tracked,
                measure: Callable[[Path, list[str]], None]) -> Tracked:
    """Re-measure the suspect studies with more repeats, pool their samples, judge again.

    `measure(folder, studies)` runs studies into `folder` (which holds a config.json); the
    pooled record replaces the run's record in the history.
    """
    studies = suspects(tracked)
    if not studies:
        return dataclasses.replace(tracked, confirmed={"studies": [], "before": None})
    again_dir = RunDir(run_dir).confirm
    shutil.rmtree(again_dir.path, ignore_errors=True)
    config = RunDir(run_dir).read(CONFIG)
    config["settings"] = confirming(settings).to_dict()
    config["studies"] = studies
    config.pop("schema_version", None)
    again_dir.write(CONFIG, config)
    measure(again_dir.path, studies)
    extra = run_metrics(again_dir.path, studies)
    before = [c.to_dict()["counts"] for c in tracked.comparisons]
    again_dir.write(CONFIRMED, {"metrics": [m.to_dict() for m in extra]})
    record = run_record(run_dir)
    history = load_history(data / HISTORY_FILE) if tracked.history_ok else []
    if tracked.history_ok:
        append_run(data / HISTORY_FILE, record, settings.history_cap)
    comparisons, problems = judge_run(data, record, history, settings.margins)
    again = Tracked(comparisons, tracked.problems + [p for p in problems
                                                     if p not in tracked.problems],
                    tracked.removed, {"studies": studies, "before": before}, tracked.history_ok)
    RunDir(run_dir).write(COMPARISON, again.to_dict())
    return again


def confirming(settings: Settings) -> Settings:
    """The same request, measured with twice the rounds and repeats and no profiler."""
    t = settings.timing
    timing = dataclasses.replace(
        t, workload_repeats=2 * t.workload_repeats, budget_s=2 * t.budget_s,
        max_rounds=max(t.max_rounds, 2 * t.workload_repeats), min_repeats=2 * t.min_repeats,
        max_repeats=max(t.max_repeats, 2 * t.min_repeats), min_time_s=2 * t.min_time_s,
        query_texts=2 * t.query_texts)
    return dataclasses.replace(settings, scalene=False, timing=timing)


def pooled(record: dict[str, Any], extra: list[Metric]) -> dict[str, Any]:
    """`record` with each metric's samples joined by the re-measured ones of the same name."""
    more = {m.name: m.samples for m in extra}
    metrics = []
    for m in record["metrics"]:
        samples = list(m["samples"]) + list(more.get(m["name"], ()))
        metrics.append({**m, "samples": list(bounded(samples))})
        if m.get("validity"):  # more samples may settle (or not) what was too noisy or too few
            metrics[-1]["validity"] = rechecked(m["validity"], samples)
    return {**record, "metrics": metrics, "confirmed": sorted(more)}


def chosen_comparisons(data: Path, before: str | None, after: str | None,
                       margins: dict[str, float]) -> tuple[Tracked, Path]:
    """`profiler compare`: AFTER (default latest) against BEFORE, or the baseline and previous."""
    history = load_history(data / HISTORY_FILE)
    before_record: dict[str, Any] | None
    if before is not None and after is None:  # one run named: it is judged against the latest
        after, before_record = None, find_record(history, before)
    else:
        before_record = find_record(history, before) if before else None
    after_record = find_record(history, after)
    problems: list[str] = []
    if before_record is None:
        comparisons, problems = judge_run(data, after_record, history, margins)
        if not comparisons:
            problems.append("nothing to compare with: no baseline and no earlier run")
    else:
        comparisons = [compare_runs(before_record, after_record, history, "chosen", margins)]
    return Tracked(comparisons, problems, []), data / "runs" / after_record["run_id"]


def pin_baseline(data: Path, run_id: str | None) -> str:
    """Copy a run's record from the history to data/baseline.json; say what was pinned."""
    record = find_record(load_history(data / HISTORY_FILE), run_id)
    save_baseline(data / BASELINE_FILE, record)
    return (f"baseline: run {record['run_id']} ({describe('model', record['model'])}, "
            f"{record['workload']}) -> {data / BASELINE_FILE}")


def describe_baseline(data: Path) -> str:
    """The pinned baseline, a few lines for a terminal."""
    path = data / BASELINE_FILE
    if not path.exists():
        raise ProfilerError(f"{path} does not exist: pin one with `profiler baseline set`")
    record = load_record(path)
    lines = [f"baseline: run {record['run_id']} from {record['created']}",
             f"  commit:   {record.get('commit') or 'n/a'}",
             f"  machine:  {describe('machine', record['machine'])}",
             f"  model:    {describe('model', record['model'])}",
             f"  workload: {record['workload']}, {describe('request', record['request'])}"]
    for m in record["metrics"]:
        value = statistic(tuple(m["samples"]), m["quantile"])
        lines.append(f"  {m['name']}: {value:,.4g} {m['unit']} (n={len(m['samples'])})")
    return "\n".join(lines)
