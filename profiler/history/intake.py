"""Runs from elsewhere: the history restored from the published site, and merged run folders.

The site carries its own history (report/files/history.json), so CI restores it before a build
and trends accumulate without committing results. Run folders from a job matrix (or copied from
anywhere) are merged into one data/ and rendered as one site.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.config import STUDY_NAMES
from profiler.errors import ProfilerError, first_line
from profiler.history.gate import (
    Rejected,
    checked_record,
    checked_records,
    checked_run_id,
)
from profiler.history.store import (
    BASELINE_FILE,
    DEFAULT_CAP,
    HISTORY_FILE,
    RESTORE_NOTE,
    load_history,
    merge_records,
    save_baseline,
)
from profiler.history.tracking import run_record
from profiler.rundir import CALIBRATION, COMPARISON, CONFIG, RUN_FILES, SUMMARY, RunDir
from profiler.storage import (
    OLDEST_READABLE,
    SCHEMA_VERSION,
    migrate,
    point_latest,
    replace,
    write_json,
)

TOP_FILES = {*RUN_FILES, CALIBRATION, COMPARISON, *(f"{name}.json" for name in STUDY_NAMES)}
NESTED_FILES = (r"scalene/[a-z_,-]{1,200}\.(json\.gz|html)", r"logs/[a-z_,-]{1,200}\.log")
# settings a run folder from elsewhere never chooses: they run its code or publish more
NEVER_FROM_ELSEWHERE = {"trust_remote_code": False, "scalene_html": False,
                        "include_host_info": False}

PUBLISHED = "report/files"  # where the site carries history.json and baseline.json
MAX_BYTES = 64 * 1024 * 1024  # a history of thousands of runs is a few MB
DEADLINE_S = 60.0  # for a whole download, however slowly the server sends it
READ_TIMEOUT_S = 15.0
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class NotPublished(Exception):
    """The site answered 404: there is no history (or baseline) there yet."""


def restore(url: str, data: Path, cap: int = DEFAULT_CAP) -> str:
    """Fetch the published history (and baseline) from the site at `url` into `data`.

    Runs already in data/history.json are kept; the published ones that pass the gate are
    added, each one that does not is named and left out. Only a 404 starts a fresh history: any
    other failure (a 503, a timeout, a file that is not a history) raises ProfilerError, so CI
    stops before it deploys a history of one run over the only copy of all the others.
    """
    base = _site_address(url) + "/" + PUBLISHED
    note = _restore_history(f"{base}/{HISTORY_FILE}", data, cap)
    if not (data / BASELINE_FILE).exists():
        note["message"] += _restore_baseline(f"{base}/{BASELINE_FILE}", data)
    write_json(data / RESTORE_NOTE, {"source": url, **note})
    return str(note["message"])


def _site_address(url: str) -> str:
    """The site's address: https, or plain http to this machine alone."""
    parts = urllib.parse.urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in LOCAL_HOSTS
    if not (parts.scheme == "https" or local) or not parts.hostname:
        raise ProfilerError(f"restore needs the published site's https address, got {url!r}")
    return url.rstrip("/")


def _restore_history(url: str, data: Path, cap: int) -> dict[str, Any]:
    try:
        published = _parse(_download(url), url)
    except NotPublished:
        return {"status": "fresh", "runs": 0, "dropped": [],
                "message": f"no earlier history at {url} (HTTP 404): starting a fresh history"}
    try:
        runs, dropped = checked_records(published.get("runs"))
    except Rejected as exc:
        raise ProfilerError(f"{url} is not a run history ({exc}); data/ is unchanged") from None
    removed = merge_records(data / HISTORY_FILE, runs, cap)
    message = f"restored {len(runs)} run(s) of history from {url}"
    if dropped:
        message += f"; left out {len(dropped)} that did not pass the checks: {dropped[0]}"
    if removed:
        message += f"; history_cap {cap} thinned out {len(removed)} older run(s)"
    return {"status": "restored", "runs": len(runs), "dropped": dropped, "message": message}


def _restore_baseline(url: str, data: Path) -> str:
    """Pin the published baseline if there is one and it passes the gate; say what happened."""
    try:
        record = checked_record(_parse(_download(url), url))
    except NotPublished:
        return ""
    except Rejected as exc:
        return f"; the published baseline was left out ({exc})"
    save_baseline(data / BASELINE_FILE, record)
    return f"; pinned the published baseline (run {record['run_id']})"


def _parse(text: str, url: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad JSON, a 5,000-digit number, deep nesting
        raise ProfilerError(f"{url} is not valid JSON ({first_line(exc, 120)}); data/ is "
                            "unchanged") from None
    if not isinstance(found, dict):
        raise ProfilerError(f"{url} is not a JSON object; data/ is unchanged")
    return found


def _download(url: str) -> str:
    """The body at `url`; NotPublished on 404, ProfilerError on any other failure."""
    request = urllib.request.Request(url, headers={"Cache-Control": "no-cache"})
    began = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response:
            return _read_capped(response, url, began).decode("utf-8")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotPublished from None
        raise ProfilerError(f"could not fetch {url}: HTTP {exc.code}; data/ is unchanged") from None
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProfilerError(f"could not fetch {url}: {reason}; data/ is unchanged") from None


def _read_capped(response: Any, url: str, began: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(64 * 1024):
        size += len(chunk)
        if size > MAX_BYTES:
            raise ProfilerError(f"{url} is larger than {MAX_BYTES // 2**20} MB; data/ is "
                                "unchanged")
        if time.monotonic() - began > DEADLINE_S:
            raise ProfilerError(f"{url} took longer than {DEADLINE_S:.0f} s to download; data/ "
                                "is unchanged")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Incoming:
    """A run folder that passed the gate: its id, summary, history record and files to copy."""

    folder: Path
    run_id: str
    summary: dict[str, Any]
    record: dict[str, Any]
    files: tuple[str, ...]  # relative paths of regular files with names a run's files have


def merge(folders: list[Path], data: Path, cap: int = DEFAULT_CAP) -> list[str]:
    """Bring complete run folders into data/runs and the history; return the runs added.

    Every folder passes the gate before anything in `data` changes. The history records the
    runs first, then each run's checked files are copied; a merge that stops half way is
    finished by the next one. A run already merged (same id, same summary) is skipped.
    """
    load_history(data / HISTORY_FILE)  # a corrupt history stops the merge before anything
    incoming = [check_run(folder) for folder in folders]
    ids = [run.run_id for run in incoming]
    for run_id in {i for i in ids if ids.count(i) > 1}:
        twice = [str(f) for f, i in zip(folders, ids, strict=True) if i == run_id]
        raise ProfilerError(f"{twice[1]} is another copy of run {run_id} (also {twice[0]})")
    new = [run for run in incoming if not _already_merged(run, data)]
    if new:
        merge_records(data / HISTORY_FILE, [run.record for run in new], cap)
    for run in new:
        _copy_run(run, data / "runs" / run.run_id)
    newest = max((p for p in (data / "runs").iterdir() if RunDir(p).has(SUMMARY)),
                 key=lambda p: RunDir(p).read(SUMMARY)["created"], default=None)
    if newest is not None and new:
        point_latest(data, newest)
    return [run.run_id for run in new]


def _already_merged(run: Incoming, data: Path) -> bool:
    target = data / "runs" / run.run_id
    if not target.exists():
        return False
    if _summary(target) != run.summary:
        raise ProfilerError(f"{run.folder} is run {run.run_id}, but data/runs/{run.run_id} holds "
                            "different results")
    return True


def check_run(folder: Path) -> Incoming:
    """A complete run folder, checked at the gate; ProfilerError naming the folder otherwise."""
    folder = folder.resolve() if folder.is_symlink() else folder
    if not folder.is_dir():
        raise ProfilerError(f"{folder} is not a folder")
    files = run_files(folder)
    for name in RUN_FILES:
        if name not in files:
            raise ProfilerError(f"{folder} is not a complete run: {name} is missing")
    summary = _summary(folder)
    version = summary.get("schema_version")
    if (not isinstance(version, int) or isinstance(version, bool)
            or not OLDEST_READABLE <= version <= SCHEMA_VERSION):
        raise ProfilerError(f"{folder} has schema_version {version!r}; merge reads "
                            f"{OLDEST_READABLE} to {SCHEMA_VERSION}")
    summary = migrate(summary)  # as every reader of the copied files will see it
    try:
        run_id = checked_run_id(folder.name, f"{folder} (its folder name)")
        if not summary.get("complete") or summary.get("run_id") != run_id:
            raise Rejected("its summary names no complete run of that id")
        config = RunDir(folder).read(CONFIG)
        if config.get("run_id") != run_id:
            raise Rejected(f"its {CONFIG} names another run")
        _check_studies(folder, config, files)
        record = checked_record(run_record(folder))
    except Rejected as exc:
        raise ProfilerError(f"{folder} is not a run merge can take: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProfilerError(f"{folder} is not a complete run: its results are damaged "
                            f"({first_line(exc, 120)})") from None
    return Incoming(folder, run_id, summary, record, tuple(files))


def run_files(folder: Path) -> list[str]:
    """The regular files of a run folder that have the names a run's files have.

    Anything else is left behind. A link where a run's file belongs could bring any file of
    this machine onto the site, so it makes the folder one merge refuses.
    """
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not (relative in TOP_FILES or any(re.fullmatch(p, relative) for p in NESTED_FILES)):
            continue
        if path.is_symlink() or not path.is_file():
            raise ProfilerError(f"{folder} is not a run merge can take: {relative} is a link "
                                "or not a regular file")
        found.append(relative)
    return found


def _check_studies(folder: Path, config: dict[str, Any], files: list[str]) -> None:
    """Every study the run lists is there, and its profile paths stay in the run's scalene/."""
    for study in config.get("studies", []):
        name = f"{study}.json"
        if study not in STUDY_NAMES or name not in files:
            raise Rejected(f"{name} is missing")
        scalene = RunDir(folder).read_study(study).get("scalene") or {}
        for key in ("profile", "html"):
            path = scalene.get(key)
            if path is not None and path not in files:
                raise Rejected(f"{name} points its Scalene {key} outside the run's scalene/")


def _summary(folder: Path) -> dict[str, Any]:
    """The summary as written, before any migration (its version is checked first)."""
    try:
        found = json.loads(RunDir(folder).file(SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ProfilerError(f"{folder} is not a complete run: {SUMMARY} unreadable "
                            f"({first_line(exc, 120)})") from None
    if not isinstance(found, dict):
        raise ProfilerError(f"{folder} is not a complete run: {SUMMARY} is not an object")
    return found


def _copy_run(run: Incoming, target: Path) -> None:
    """Copy the run's checked files through a staging folder; its settings widen no trust."""
    staging = target.parent / ".incomplete" / target.name
    shutil.rmtree(staging, ignore_errors=True)
    for relative in run.files:
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.folder / relative, staging / relative, follow_symlinks=False)
    config = RunDir(staging).read(CONFIG)
    config["settings"] = {**config.get("settings", {}), **NEVER_FROM_ELSEWHERE}
    config["merged"] = True  # its model path is another machine's: never loaded here
    config.pop("schema_version", None)
    RunDir(staging).write(CONFIG, config)
    replace(staging, target)
