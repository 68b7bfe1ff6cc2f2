"""Runs from elsewhere: the history restored from the published site, and merged run folders.

The site carries its own history (report/files/history.json), so CI restores it before a build
and trends accumulate without committing results. Run folders from a job matrix (or copied from
anywhere) are merged into one data/ and rendered as one site.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from profiler.errors import ProfilerError
from profiler.history.store import (
    BASELINE_FILE,
    HISTORY_FILE,
    RESTORE_NOTE,
    append_run,
    load_history,
    load_record,
)
from profiler.history.tracking import run_record
from profiler.rundir import CONFIG, RUN_FILES, SUMMARY, RunDir
from profiler.storage import SCHEMA_VERSION, point_latest, write_json

PUBLISHED = "report/files"  # where the site carries history.json and baseline.json
TIMEOUT_S = 30


def restore(url: str, data: Path) -> str:
    """Fetch the published history (and baseline) from the site at `url` into `data`.

    Runs already in data/history.json are kept; the published ones are added. A site with no
    history, or a corrupt one, starts a fresh history: never an error, always said.
    """
    if not url.startswith(("http://", "https://", "file://")):
        raise ProfilerError(f"restore needs the published site's address (http or https), "
                            f"got {url!r}")
    base = url.rstrip("/") + "/" + PUBLISHED
    note = _restore_history(f"{base}/{HISTORY_FILE}", data)
    if not (data / BASELINE_FILE).exists():
        _restore_baseline(f"{base}/{BASELINE_FILE}", data)
    write_json(data / RESTORE_NOTE, {"source": url, **note})
    return note["message"]


def _restore_history(url: str, data: Path) -> dict[str, Any]:
    try:
        text = _download(url)
    except ProfilerError as exc:
        return {"status": "fresh", "runs": 0,
                "message": f"no earlier history at {url} ({exc}): starting a fresh history"}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / HISTORY_FILE
        copy.write_text(text, encoding="utf-8")
        try:
            published = load_history(copy)
        except ProfilerError as exc:
            reason = str(exc).replace(str(copy), "it")
            return {"status": "fresh", "runs": 0,
                    "message": f"the history at {url} is unusable ({reason}): starting a "
                               "fresh history"}
    data.mkdir(parents=True, exist_ok=True)
    for record in published:
        append_run(data / HISTORY_FILE, record)
    return {"status": "restored", "runs": len(published),
            "message": f"restored {len(published)} run(s) of history from {url}"}


def _restore_baseline(url: str, data: Path) -> None:
    try:
        text = _download(url)
    except ProfilerError:
        return
    target = data / BASELINE_FILE
    target.write_text(text, encoding="utf-8")
    try:
        load_record(target)
    except ProfilerError:
        target.unlink()


def _download(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return str(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise ProfilerError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProfilerError(str(reason)) from None


def merge(folders: list[Path], data: Path) -> list[str]:
    """Copy complete run folders into data/runs and the history; return the runs added.

    Every folder is checked before anything in `data` changes. A run already merged (same id,
    same summary) is skipped, so merging twice changes nothing.
    """
    checked = [_check_run(folder) for folder in folders]
    ids = [run_id for run_id, _ in checked]
    for run_id in {i for i in ids if ids.count(i) > 1}:
        twice = [str(f) for f, i in zip(folders, ids, strict=True) if i == run_id]
        raise ProfilerError(f"{twice[1]} is another copy of run {run_id} (also {twice[0]})")
    added = []
    for folder, (run_id, summary) in zip(folders, checked, strict=True):
        target = data / "runs" / run_id
        if target.exists():
            if _summary(target) != summary:
                raise ProfilerError(f"{folder} is run {run_id}, but data/runs/{run_id} holds "
                                    "different results")
            continue
        added.append(run_id)
    load_history(data / HISTORY_FILE)  # a corrupt history stops the merge before any copy
    for folder, (run_id, _) in zip(folders, checked, strict=True):
        if run_id in added:
            _copy_run(folder, data / "runs" / run_id)
            append_run(data / HISTORY_FILE, run_record(data / "runs" / run_id))
    newest = max((p for p in (data / "runs").iterdir() if RunDir(p).has(SUMMARY)),
                 key=lambda p: RunDir(p).read(SUMMARY)["created"], default=None)
    if newest is not None and added:
        point_latest(data, newest)
    return added


def _check_run(folder: Path) -> tuple[str, dict[str, Any]]:
    """A complete run folder's id and summary; ProfilerError naming the folder otherwise."""
    folder = folder.resolve() if folder.is_symlink() else folder
    if not folder.is_dir():
        raise ProfilerError(f"{folder} is not a folder")
    run = RunDir(folder)
    for name in RUN_FILES:
        if not run.has(name):
            raise ProfilerError(f"{folder} is not a complete run: {name} is missing")
    summary = _summary(folder)
    version = summary.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfilerError(f"{folder} has schema_version {version!r}; merge reads "
                            f"{SCHEMA_VERSION}")
    if not summary.get("complete") or summary.get("run_id") != folder.name:
        raise ProfilerError(f"{folder} is not a complete run (its summary names no run "
                            f"{folder.name})")
    for study in run.read(CONFIG).get("studies", []):
        if not run.has_study(study):
            raise ProfilerError(f"{folder} is not a complete run: {study}.json is missing")
    return folder.name, summary


def _summary(folder: Path) -> dict[str, Any]:
    """The summary as written (not migrated): merge takes runs of this schema version only."""
    try:
        found = json.loads(RunDir(folder).file(SUMMARY).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfilerError(f"{folder} is not a complete run: {SUMMARY} unreadable "
                            f"({exc})") from None
    if not isinstance(found, dict):
        raise ProfilerError(f"{folder} is not a complete run: {SUMMARY} is not an object")
    return found


def _copy_run(folder: Path, target: Path) -> None:
    staging = target.parent / ".incomplete" / target.name
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, symlinks=False)
    staging.replace(target)
