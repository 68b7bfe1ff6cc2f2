"""Faults during a run: a study process dies, Ctrl-C, two builds at once, out of memory, a full
disk, damaged or older data. Each ends with a clear message and nothing earlier lost."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import read_page
from test_history import record

from profiler.cli import main
from profiler.errors import ProfilerError
from profiler.lock import LOCK_FILE
from profiler.report.render import check_gzip
from profiler.storage import SCHEMA_VERSION, read_json, write_json

EARLIER = "20250101T000000Z"


def snapshot(data: Path, skip: str = ".incomplete") -> dict[str, str]:
    """Every file and link under data/ (but `skip`) with its content's hash."""
    found = {}
    for path in sorted(data.rglob("*")):
        if skip in path.relative_to(data).parts:
            continue
        if path.is_symlink():
            found[str(path.relative_to(data))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(data))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def earlier_results(project: Path) -> None:
    """An earlier run, a history and a baseline, as a user's data/ holds them."""
    data = project / "data"
    run = data / "runs" / EARLIER
    write_json(run / "summary.json", {"run_id": EARLIER, "complete": True, "studies": {}})
    (data / "latest").symlink_to(Path("runs") / EARLIER, target_is_directory=True)
    write_json(data / "history.json", {"cap": 200, "runs": [record(1), record(2)], "removed": []})
    write_json(data / "baseline.json", record(1))


def start_build(project: Path, *args: str) -> subprocess.Popen[str]:
    """`profiler build` in its own process group, as a terminal runs a foreground command."""
    return subprocess.Popen([sys.executable, "-m", "profiler", "build", *args], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_worker(build: subprocess.Popen[str], study: str,
                    timeout_s: float = 120) -> psutil.Process:
    """The study process of `study`, once it runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and build.poll() is None:
        for child in psutil.Process(build.pid).children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if any(part.endswith("worker.py") for part in command) and study in command:
                return child
        time.sleep(0.05)
    raise AssertionError(f"no {study} process appeared; stderr: {build.communicate()[1]}")


def ended(process: psutil.Process, within_s: float) -> bool:
    """Whether `process` is dead within `within_s`: gone, or a zombie its new parent has yet to
    reap (an orphan waits on the reaper of this container, which may take a second)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_a_killed_study_leaves_an_incomplete_run_that_resume_finishes(
        tiny_project: Path, tiny_model: Path) -> None:
    earlier_results(tiny_project)
    data = tiny_project / "data"
    before = snapshot(data)
    # the memory study, once resumed, also meets a batch too large for its memory limit
    build = start_build(tiny_project, "--model", str(tiny_model), "--no-scalene",
                        "--study", "text_length", "--study", "memory", "--batch-sizes", "2,4096",
                        "--memory-limit-mb", "60")
    worker = wait_for_worker(build, "memory")
    time.sleep(1.0)
    worker.kill()  # as the kernel's OOM killer, or a crash in native code, would end it
    _, stderr = build.communicate(timeout=300)
    assert build.returncode == 1, stderr
    assert "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("error: memory did not finish (killed by SIGKILL: out of memory, "
                            "or stopped from outside; log: logs/memory.log); the site shows the "
                            "studies that did, and the run is kept in "), error
    assert "`profiler build --resume` measures only what is missing" in error
    # earlier runs, data/latest, the history and the baseline are untouched
    assert snapshot(data) == before
    (staging,) = (data / "runs" / ".incomplete").iterdir()
    summary = read_json(staging / "summary.json")
    assert summary["complete"] is False and list(summary["missing"]) == ["memory"]
    assert list(summary["studies"]) == ["text_length"]
    # the site shows what finished and says what is missing
    home = read_page(tiny_project / "site" / "index.html").text
    assert "Incomplete run: 1 study did not finish" in home
    assert "killed by SIGKILL" in home
    memory_page = read_page(tiny_project / "site" / "report" / "memory" / "index.html").text
    assert f"This study did not finish in run {staging.name}" in memory_page
    finished = (staging / "text_length.json").read_bytes()

    done = subprocess.run([sys.executable, "-m", "profiler", "build", "--resume"],
                          cwd=tiny_project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = data / "runs" / staging.name
    assert (data / "latest").resolve() == run
    assert not list((data / "runs" / ".incomplete").iterdir())
    assert (run / "text_length.json").read_bytes() == finished  # not measured again
    # out of memory at batch 4096: recorded as failed, with why; batch 2 measured all the same
    result = read_json(run / "memory.json")["result"]
    assert [p["batch_size"] for p in result["points"]] == [2]
    (failed,) = result["failed"]
    assert failed["batch_size"] == 4096 and failed["out_of_memory"] is True
    assert failed["reason"].startswith("out of memory within the 60 MB limit: ")
    page = read_page(tiny_project / "site" / "report" / "memory" / "index.html")
    assert "1 batch size did not finish" in page.text
    assert "batch 4096: out of memory within the 60 MB limit" in page.text
    summary = read_json(run / "summary.json")
    assert summary["complete"] is True and summary["missing"] == {}
    assert [r["run_id"] for r in read_json(data / "history.json")["runs"]][-1] == staging.name
    assert "Incomplete run" not in read_page(tiny_project / "site" / "index.html").text


def test_resume_takes_no_other_settings_and_needs_an_incomplete_run(tiny_project: Path) -> None:
    for args, message in (
            (["--resume", "--quick"], "error: --resume finishes the incomplete run with the "
                                      "settings it started with: give no other settings"),
            (["--resume"], "error: no incomplete run to resume in "
                           f"{tiny_project / 'data' / 'runs' / '.incomplete'}")):
        done = subprocess.run([sys.executable, "-m", "profiler", "build", *args],
                              cwd=tiny_project, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and done.stderr.strip() == message, done.stderr


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_ctrl_c_stops_within_3_seconds_and_leaves_no_process(tiny_project: Path,
                                                             tiny_model: Path) -> None:
    earlier_results(tiny_project)
    data = tiny_project / "data"
    before = snapshot(data)
    build = start_build(tiny_project, "--model", str(tiny_model), "--study", "memory",
                        "--batch-sizes", "2,4,8,16")
    wait_for_worker(build, "memory")
    time.sleep(2.0)  # Scalene and the study are running
    children = descendants(build.pid)
    assert children
    started = time.monotonic()
    os.killpg(build.pid, signal.SIGINT)  # a Ctrl-C reaches the terminal's foreground group
    _, stderr = build.communicate(timeout=30)
    took = time.monotonic() - started
    assert took < 3.0, took
    assert build.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    time.sleep(0.2)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not left, [c.cmdline() for c in left]
    assert snapshot(data) == before  # data/latest still names the earlier, complete run
    assert not list(data.rglob("*.partial.json")) and not list(data.rglob(".*.json.*"))


def test_a_second_build_refuses_and_a_dead_builds_lock_is_taken_over(
        tiny_project: Path, tiny_model: Path) -> None:
    first = start_build(tiny_project, "--model", str(tiny_model), "--no-scalene",
                        "--study", "leak")
    worker = wait_for_worker(first, "leak")
    data = tiny_project / "data"
    (own,) = (data / "runs" / ".incomplete").iterdir()  # the first build's: it goes on writing
    before = snapshot(data, skip=own.name)
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "profiler", "build", "--model",
                             str(tiny_model), "--study", "leak"], cwd=tiny_project,
                            capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 15  # at once: it measures nothing
    assert second.returncode == 1
    assert second.stderr.strip().startswith(
        f"error: another profiler command is using {tiny_project} (PID {first.pid}, "
        "`profiler build`, since "), second.stderr
    assert snapshot(data, skip=own.name) == before  # the second build wrote nothing ...
    assert list((data / "runs" / ".incomplete").iterdir()) == [own]  # ... nor started a run

    os.killpg(first.pid, signal.SIGKILL)  # the first dies without cleaning up
    first.communicate(timeout=30)
    assert ended(worker, within_s=1.5)  # its study process (its own session) does not outlive it
    assert json.loads((tiny_project / LOCK_FILE).read_text())["pid"] == first.pid
    third = subprocess.run([sys.executable, "-m", "profiler", "render", "--no-site"],
                           cwd=tiny_project, capture_output=True, text=True, timeout=60)
    lines = third.stderr.strip().splitlines()
    assert lines[0].startswith(f"note: took over the lock left by PID {first.pid}, "), lines
    assert lines[0].endswith("which is no longer running")
    assert lines[-1] == "error: no results for a complete run (data/latest): run `profiler " \
                        "build` first"


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["profiler", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return int(stopped.value.code or 0)


def test_a_full_disk_keeps_the_earlier_file_and_says_what_was_not_written(
        project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier_results(project)
    data = project / "data"
    before = snapshot(data)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the data never reach the disk
    assert _main(monkeypatch, "baseline", "set", "20260002") == 1
    error = capsys.readouterr().err.strip()
    assert error == (f"error: could not write {data / 'baseline.json'}: No space left on device; "
                     "what was there before is unchanged")
    assert snapshot(data) == before  # no half-written file, no stray temporary file


def test_an_older_schema_is_migrated_on_read(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    old = {"schema_version": 2, "run_id": "x", "studies": {}, "bottlenecks": []}
    path.write_text(json.dumps(old), encoding="utf-8")
    data = read_json(path)
    assert data["schema_version"] == SCHEMA_VERSION
    assert (data["complete"], data["missing"]) == (True, {})
    assert json.loads(path.read_text(encoding="utf-8")) == old  # migrated in memory only
    path.write_text(json.dumps({**old, "schema_version": 1}), encoding="utf-8")
    with pytest.raises(ProfilerError, match="schema_version 1, from before workloads"):
        read_json(path)


def test_a_truncated_profile_is_named_not_published(tmp_path: Path) -> None:
    profile = tmp_path / "batch_size.json.gz"
    whole = gzip.compress(b'{"elapsed_time_sec": 1.0}' * 1000)
    profile.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ProfilerError, match=f"{profile} is damaged"):
        check_gzip(profile)
    assert profile.read_bytes() == whole[: len(whole) // 2]
    profile.write_bytes(whole)
    check_gzip(profile)


def test_the_zygote_forks_a_study_process_per_request_and_survives_their_failures(
        tmp_path: Path, tiny_model: Path) -> None:
    from profiler.runner.process import Zygote

    seen: list[str] = []
    log = tmp_path / "study.log"
    missing = str(tmp_path / "no-such-run")
    run = tmp_path / "run"  # a study that says it started, then loads a model
    run.mkdir()
    write_json(run / "config.json", {
        "settings": {}, "device": "cpu", "corpus_path": str(tmp_path / "corpus.txt"),
        "model_source": {"requested": "tiny", "path": str(tiny_model), "origin": "local"}})

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with Zygote(tmp_path / "zygote.log") as zygote:
        assert zygote.run([missing, "batch_size"], log, seen.append) == 1
        assert "no-such-run" in log.read_text()  # the child's traceback went to its log
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C as the study's first event arrives
            zygote.run([str(run), "batch_size"], log, interrupt)
        assert all(ended(child, within_s=2.0)
                   for child in psutil.Process(zygote.process.pid).children())
        # the zygote still serves: the next study is forked and its end reported
        assert zygote.run([missing, "leak"], log, seen.append) == 1
        assert seen == []  # neither failed study printed an event
    assert zygote.process.poll() is not None  # ended with the build
