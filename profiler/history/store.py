"""Run history: a compact record per complete run in data/history.json, bounded by a cap.

A record keeps what a later comparison needs and nothing more: each headline metric's samples
(bounded), unit and direction; the machine's fingerprint and a calibration matmul measured at
the start and the end of the build; the model and its weights' checksum; the workload; the
commit; the time. Runs are comparable only when machine, model, workload and request match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from profiler.config import Settings
from profiler.errors import ProfilerError
from profiler.measure.metrics import Metric
from profiler.measure.system import TIMED_LIBRARIES
from profiler.rundir import CONFIG, SYSTEM, RunDir
from profiler.safety import redact
from profiler.storage import read_json, write_json

HISTORY_FILE = "history.json"
BASELINE_FILE = "baseline.json"
RESTORE_NOTE = "restore.json"  # what the last restore found, for the build log and trends page
DEFAULT_CAP = 200
KEEP_RECENT = 0.5  # thinning spares the newest half of the cap; older runs keep one per week
MACHINE_KEYS = ("cpu_model", "logical_cores", "ram_gb", "gpu", "device")
LIBRARY_KEYS = TIMED_LIBRARIES  # a change of one of their versions is reported


def record_of(run_dir: Path, metrics: list[Metric], calibration: list[float],
              weights_sha256: str | None) -> dict[str, Any]:
    """The history record of a complete run in `run_dir`."""
    config, system = RunDir(run_dir).read(CONFIG), RunDir(run_dir).read(SYSTEM)
    settings = config["settings"]
    return {
        "run_id": config["run_id"], "created": config["created"],
        "commit": config.get("commit"), "machine": machine_of(system),
        "libraries": {k: v for k, v in system.get("libraries", {}).items()
                      if k in LIBRARY_KEYS and v},
        "model": {"name": redact(settings["model"]), "sha256": weights_sha256},
        "workload": settings.get("workload", "bulk"),
        "request": {"quick": bool(settings.get("quick")),
                    "request_size": settings.get("request_size"),
                    "corpus_texts": config["corpus"]["texts"],
                    "texts": Settings.from_dict(settings).request_texts(
                        config["corpus"]["texts"])},
        "calibration_gflops": [round(x, 3) for x in calibration],
        "metrics": [m.to_dict() for m in metrics],
    }


def machine_of(system: dict[str, Any]) -> dict[str, Any]:
    """The parts of system.json that make two runs' timings comparable."""
    gpu = system.get("gpu")
    return {"cpu_model": system.get("cpu_model"), "logical_cores": system.get("logical_cores"),
            "ram_gb": system.get("ram_gb"), "gpu": gpu.get("name") if gpu else None,
            "device": system.get("device")}


def fingerprint(record: dict[str, Any]) -> str:
    """A short hash of what must match for two runs to be judged against each other.

    The model counts by its name: new weights under the same name are the change a gate is
    for, so they are judged (and named beside the verdicts), never set apart.
    """
    key = {"machine": record["machine"], "model": record["model"]["name"],
           "workload": record["workload"], "request": record["request"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def incomparable(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why runs `a` and `b` must not be judged against each other, or None if they may."""
    for key, what in (("machine", "machines"), ("model", "models"),
                      ("workload", "workloads"), ("request", "requests")):
        same = (a[key]["name"] == b[key]["name"]) if key == "model" else a[key] == b[key]
        if not same:
            return (f"different {what}: {describe(key, a[key])} vs {describe(key, b[key])}")
    return None


def weights_change(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """"weights 53aa5117 -> 9c1d22aa" when the same-named model's weights differ, else None."""
    old, new = a["model"].get("sha256"), b["model"].get("sha256")
    if old == new:
        return None
    return f"weights {(old or 'unknown')[:8]} -> {(new or 'unknown')[:8]}"


def describe(key: str, value: Any) -> str:
    """One short phrase for a fingerprint part."""
    if key == "machine":
        return f"{value['cpu_model']} ({value['logical_cores']} cores, {value['gpu'] or 'no GPU'})"
    if key == "model":
        sha = value.get("sha256")
        return f"{value['name']}" + (f" [{sha[:8]}]" if sha else "")
    if key == "request":
        kind = "quick" if value["quick"] else "full"
        return f"{kind}, {value.get('texts') or value['request_size'] or '?'} texts"
    return str(value)


def git_commit(folder: Path) -> str | None:
    """The commit checked out where the build ran, if it is a git work tree."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                              text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def load_history(path: Path) -> list[dict[str, Any]]:
    """The runs in a history file, oldest first; [] when there is none yet."""
    if not path.exists():
        return []
    data = read_json(path)
    runs = data.get("runs")
    if not isinstance(runs, list) or not all(_is_record(r) for r in runs):
        raise ProfilerError(f"{path} is not a run history (no list of runs with metrics)")
    return runs


def load_record(path: Path) -> dict[str, Any]:
    """One run record (a baseline file): checked like a history."""
    data = read_json(path)
    data.pop("schema_version", None)
    if not _is_record(data):
        raise ProfilerError(f"{path} is not a run record (no run_id, machine and metrics)")
    return data


def _is_record(run: Any) -> bool:
    return (isinstance(run, dict) and isinstance(run.get("run_id"), str)
            and isinstance(run.get("metrics"), list) and isinstance(run.get("machine"), dict)
            and all(isinstance(m, dict) and "samples" in m for m in run["metrics"]))


def append_run(path: Path, record: dict[str, Any], cap: int = DEFAULT_CAP) -> list[str]:
    """Add (or replace) `record` in the history; return the run ids thinning removed."""
    return merge_records(path, [record], cap)


def merge_records(path: Path, records: list[dict[str, Any]], cap: int = DEFAULT_CAP) -> list[str]:
    """Add (or replace, by run id) `records` in the history in one write; return what thinning
    removed."""
    new = {r["run_id"] for r in records}
    runs = [r for r in load_history(path) if r["run_id"] not in new] + records
    runs.sort(key=lambda r: _created(r).astimezone(dt.timezone.utc))
    kept, removed = thin(runs, cap)
    previous = read_json(path).get("removed", []) if path.exists() else []
    write_json(path, {"cap": cap, "runs": kept,
                      "removed": (previous + [_removal(r) for r in removed])[-10 * cap:]})
    return [r["run_id"] for r in removed]


def _removal(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["run_id"], "created": run["created"], "fingerprint": fingerprint(run)}


def thin(runs: list[dict[str, Any]], cap: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Keep at most `cap` runs: the newest half as they are, older ones one per ISO week.

    If weekly thinning is not enough, the oldest runs go. Both lists are returned, so the
    caller records what went (nothing is dropped silently).
    """
    if len(runs) <= cap:
        return runs, []
    recent = max(1, int(cap * KEEP_RECENT))
    older, newest = runs[:-recent], runs[-recent:]
    weekly: dict[tuple[str, int, int], dict[str, Any]] = {}
    for run in older:  # the last run of each week and fingerprint stands for it
        year, week, _ = _created(run).isocalendar()
        weekly[(fingerprint(run), year, week)] = run
    survivors = sorted(weekly.values(), key=lambda r: r["created"])
    survivors = survivors[max(0, len(survivors) + len(newest) - cap):]
    kept_ids = {r["run_id"] for r in survivors + newest}
    return survivors + newest, [r for r in runs if r["run_id"] not in kept_ids]


def _created(run: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(run["created"])


def save_baseline(path: Path, record: dict[str, Any]) -> None:
    """Pin `record` as the baseline (a file the user commits)."""
    write_json(path, {key: value for key, value in record.items() if key != "schema_version"})


def find_record(runs: list[dict[str, Any]], run_id: str | None) -> dict[str, Any]:
    """The run `run_id` (a prefix is enough when unique), or the newest run."""
    if not runs:
        raise ProfilerError("the run history is empty: run `profiler build` first")
    if run_id is None:
        return runs[-1]
    hits = [r for r in runs if r["run_id"].startswith(run_id)]
    if len(hits) != 1:
        what = "no run" if not hits else f"{len(hits)} runs"
        raise ProfilerError(f"{what} in the history match {run_id!r}")
    return hits[0]

