"""The trends page's context: each headline metric across comparable runs, with change points."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import altair as alt

from profiler.analysis.changepoints import change_points
from profiler.analysis.verdicts import statistic
from profiler.errors import ProfilerError
from profiler.history.store import (
    BASELINE_FILE,
    HISTORY_FILE,
    RESTORE_NOTE,
    describe,
    fingerprint,
    load_history,
    load_record,
)
from profiler.report.charts import HEIGHT, WIDTH
from profiler.storage import read_json, write_json

SPARK_HEIGHT = 60
CHANGE_ALPHA = 0.01  # E-Divisive's permutation test must reach this to call a change point


def load_trends(data: Path, current: dict[str, Any] | None) -> dict[str, Any]:
    """Runs comparable with `current` (oldest first), the others, and why a history is missing."""
    try:
        runs = load_history(data / HISTORY_FILE)
    except ProfilerError as exc:
        return {"problem": str(exc), "runs": [], "others": [], "metrics": []}
    if current is None:
        return {"problem": "this run is not in the history", "runs": [], "others": [],
                "metrics": []}
    restored = _restore_note(data)
    key = fingerprint(current)
    same = [r for r in runs if fingerprint(r) == key]
    others = [{"run_id": r["run_id"], "created": r["created"],
               "why": describe("machine", r["machine"]) + ", " + describe("model", r["model"])
               + f", {r['workload']}, " + describe("request", r["request"])}
              for r in runs if fingerprint(r) != key]
    return {"problem": None, "restore": restored, "runs": [_run_row(r) for r in same],
            "others": others,
            "metrics": [series_of(name, same) for name in _metric_names(same)],
            "alpha": CHANGE_ALPHA}


def _restore_note(data: Path) -> dict[str, Any] | None:
    """What `profiler restore` found before this build, if it ran."""
    with contextlib.suppress(ProfilerError):
        if (data / RESTORE_NOTE).is_file():
            return read_json(data / RESTORE_NOTE)
    return None


def _metric_names(runs: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [m["name"] for m in run["metrics"] if m["name"] not in names]
    return names


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    cal = run.get("calibration_gflops") or []
    return {"run_id": run["run_id"], "created": run["created"], "commit": run.get("commit"),
            "calibration": statistic(tuple(cal), 0.5) if cal else None,
            "libraries": run.get("libraries", {}), "confirmed": run.get("confirmed", [])}


def series_of(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric's statistic, quartiles and change points across `runs`."""
    points = []
    for index, run in enumerate(runs):
        found = next((m for m in run["metrics"] if m["name"] == name), None)
        if found is None or not found["samples"]:
            continue
        samples = tuple(found["samples"])
        points.append({"index": index, "run_id": run["run_id"], "created": run["created"],
                       "value": statistic(samples, found["quantile"]),
                       "low": statistic(samples, 0.25), "high": statistic(samples, 0.75),
                       "n": len(samples), "title": found["title"], "unit": found["unit"],
                       "direction": found["direction"]})
    found_points = change_points([p["value"] for p in points], alpha=CHANGE_ALPHA)
    changes = [{**c.to_dict(), "run_id": points[c.index]["run_id"],
                "created": points[c.index]["created"],
                "previous_run_id": points[c.index - 1]["run_id"]} for c in found_points]
    first = points[-1] if points else {"title": name, "unit": "", "direction": "higher"}
    return {"name": name, "title": first["title"], "unit": first["unit"],
            "direction": first["direction"], "points": points, "changes": changes,
            "chart": json.dumps(trend_chart(points, changes, first).to_dict(),
                                separators=(",", ":")),
            "spark": json.dumps(sparkline(points).to_dict(), separators=(",", ":"))}


def sparkline(points: list[dict[str, Any]]) -> Any:
    """The metric per run, oldest first, without axes: the home page's glance at history."""
    return alt.Chart(alt.Data(values=points)).mark_line(point=True).encode(
        x=alt.X("index:O", axis=None), y=alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False)),
        tooltip=["run_id:N", alt.Tooltip("value:Q", format=",.4g")],
    ).properties(width=WIDTH, height=SPARK_HEIGHT)


def trend_chart(points: list[dict[str, Any]], changes: list[dict[str, Any]],
                meta: dict[str, Any]) -> Any:
    """The metric per run (line), its interquartile range (bars), change points (rules)."""
    data = alt.Data(values=points)
    x = alt.X("index:O", title="Run (oldest first)", axis=alt.Axis(labels=False, ticks=False))
    better = "higher" if meta["direction"] == "higher" else "lower"
    y_title = f"{meta['title']} ({meta['unit']}, {better} is better)"
    base = alt.Chart(data).encode(x=x)
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        tooltip=["run_id:N", "created:N", alt.Tooltip("value:Q", format=",.4g"),
                 alt.Tooltip("low:Q", format=",.4g", title="25th pct"),
                 alt.Tooltip("high:Q", format=",.4g", title="75th pct"), "n:Q"])
    bars = base.mark_errorbar().encode(y=alt.Y("low:Q", title=""), y2="high:Q")
    marks = [{"index": next(p["index"] for p in points if p["run_id"] == c["run_id"]),
              "run_id": c["run_id"], "change_pct": 100 * c["change"]} for c in changes]
    rules = alt.Chart(alt.Data(values=marks)).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(
        x="index:O", tooltip=["run_id:N", alt.Tooltip("change_pct:Q", format="+.1f")])
    return (bars + line + rules).properties(width=WIDTH, height=HEIGHT)


def write_run_records(data: Path, files: Path) -> None:
    """Put each history run's record on the site as files/history/<run_id>.json."""
    try:
        runs = load_history(data / HISTORY_FILE)
    except ProfilerError:
        runs = []
    baseline = data / BASELINE_FILE
    if baseline.is_file():
        with contextlib.suppress(ProfilerError):
            runs = [*runs, load_record(baseline)]
    for run in runs:  # a run id names a file: never one that reaches outside the folder
        if re.fullmatch(r"[\w-]{1,64}", str(run.get("run_id"))):
            write_json(files / "history" / f"{run['run_id']}.json", run)


def publish_history(data: Path, files: Path) -> None:
    """Ship history.json and baseline.json with the site, for the next CI run to restore."""
    for name, load in ((HISTORY_FILE, load_history), (BASELINE_FILE, load_record)):
        source = data / name
        with contextlib.suppress(ProfilerError):
            if source.is_file():
                load(source)  # only a file that reads back is published
                shutil.copy2(source, files / name)


MATRIX_METRICS = ("bulk_best_texts_per_s", "stream_best_texts_per_s", "query_latency_ms_p95",
                  "peak_rss_mb")


def load_matrix(data: Path) -> dict[str, Any]:
    """Every machine x model (x workload, request) pair in the history, newest figures first."""
    try:
        runs = load_history(data / HISTORY_FILE)
    except ProfilerError as exc:
        return {"problem": str(exc), "pairs": [], "charts": []}
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(fingerprint(run), []).append(run)
    pairs = [_pair(key, members) for key, members in groups.items()]
    pairs.sort(key=lambda p: (p["model"], p["machine"]))
    charts = [{"title": f"{_title(name, runs)} per pair across runs", "spec": json.dumps(
        pair_chart(name, _title(name, runs), pairs).to_dict(), separators=(",", ":"))}
        for name in MATRIX_METRICS if any(name in p["values"] for p in pairs)]
    return {"problem": None, "pairs": pairs, "charts": charts, "metrics": [
        {"name": n, "title": _title(n, runs)} for n in MATRIX_METRICS
        if any(n in p["values"] for p in pairs)]}


def _title(name: str, runs: list[dict[str, Any]]) -> str:
    for run in runs:
        for m in run["metrics"]:
            if m["name"] == name:
                return f"{m['title']} ({m['unit']})"
    return name


def _pair(key: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    latest = runs[-1]
    values = {m["name"]: statistic(tuple(m["samples"]), m["quantile"])
              for m in latest["metrics"] if m["samples"]}
    history = [{"run_id": r["run_id"], "created": r["created"],
                "values": {m["name"]: statistic(tuple(m["samples"]), m["quantile"])
                           for m in r["metrics"] if m["samples"]}} for r in runs]
    return {"key": key, "machine": describe("machine", latest["machine"]),
            "model": describe("model", latest["model"]), "workload": latest["workload"],
            "request": describe("request", latest["request"]), "runs": len(runs),
            "latest": latest["run_id"], "values": values, "history": history}


def pair_chart(name: str, title: str, pairs: list[dict[str, Any]]) -> Any:
    """One metric across runs, a line per machine x model pair."""
    rows = [{"created": h["created"], "run_id": h["run_id"], "value": h["values"][name],
             "pair": f"{p['model']} on {p['machine']} ({p['workload']})"}
            for p in pairs for h in p["history"] if name in h["values"]]
    return alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("created:T", title="Run time"),
        y=alt.Y("value:Q", title=title, scale=alt.Scale(zero=False)),
        color=alt.Color("pair:N", title="Model on machine", legend=alt.Legend(orient="bottom",
                                                                              columns=1)),
        tooltip=["pair:N", "run_id:N", alt.Tooltip("value:Q", format=",.4g")],
    ).properties(width=WIDTH, height=HEIGHT)
