"""Run a study in its own process under Scalene; fall back to a plain process if Scalene fails."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from profiler.rundir import RunDir
from profiler.runner.lifetime import BUILD_PID
from profiler.runner.probes import PLAIN_ENV, PLAIN_PYTHON, build_env
from profiler.runner.zygote import MESSAGE
from profiler.storage import Record
from profiler.studies.base import EVENT_PREFIX

WORKER = Path(__file__).with_name("worker.py")
# Profile the model stack and this package; everything else (Python's own threading, Scalene)
# stays out of the attribution.
PROFILED = ("sentence_transformers", "transformers", "tokenizers", "torch")

NO_OUTPUT = "no output"
EventHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ScaleneOutcome(Record):
    """Whether a study was profiled, and where its profile is."""

    status: str  # profiled | disabled | unavailable | failed
    reason: str | None = None
    profile: str | None = None
    html: str | None = None  # Scalene's standalone viewer, only with --scalene-html


def scalene_command(run_dir: Path, studies: list[str], outfile: Path) -> list[str]:
    """Build the `scalene run` command: profiling off at start, the studies switch it on."""
    only = ",".join([*PROFILED, str(WORKER.parent) + "/"])
    return [sys.executable, "-m", "scalene", "run", "--off", "--memory", "--profile-all",
            "--profile-only", only, "-o", str(outfile), str(WORKER), "---", str(run_dir),
            ",".join(studies), "--under-scalene"]


def group_label(studies: list[str]) -> str:
    """Name a process's log and profile after its study, or `all-studies` when it runs many."""
    return studies[0] if len(studies) == 1 else "all-studies"


def run_study(run_dir: Path, studies: list[str], use_scalene: bool, on_event: EventHandler,
              zygote: Zygote | None = None) -> ScaleneOutcome:
    """Run `studies` in one child process (forked from `zygote` when the run is unprofiled);
    return how Scalene went. RuntimeError on failure."""
    label = group_label(studies)
    log = RunDir(run_dir).logs / f"{label}.log"
    plain = [sys.executable, str(WORKER), str(run_dir), ",".join(studies)]
    if not use_scalene:
        _run(plain, log, on_event, zygote)
        return ScaleneOutcome("disabled", "profiling switched off with --no-scalene")
    if importlib.util.find_spec("scalene") is None:
        _run(plain, log, on_event)
        return ScaleneOutcome("unavailable", "Scalene is not installed")
    outfile = RunDir(run_dir).scalene / f"{label}.json"
    outfile.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run(scalene_command(run_dir, studies, outfile), log, on_event)
    except StudyKilled:
        raise  # the process was killed, not Scalene's doing: running it again would not help
    except RuntimeError as exc:
        # studies that finished before the crash were timed with profiling off: they stand
        run = RunDir(run_dir)
        rest = [name for name in studies if not run.study_path(name, partial=True).is_file()]
        if rest:
            _run([*plain[:3], ",".join(rest)], log, on_event)
        return ScaleneOutcome("failed", f"Scalene failed ({exc}); " + (
            "the study ran unprofiled" if rest == studies else
            f"{_kept(len(studies) - len(rest))}, measured with profiling off, and {len(rest)} "
            "ran again unprofiled"))
    if not outfile.is_file():
        return ScaleneOutcome("failed", "Scalene wrote no profile")
    return ScaleneOutcome("profiled", profile=str(outfile.relative_to(run_dir)))


class StudyKilled(RuntimeError):
    """The study process was ended by a signal: killed (out of memory?) or crashed."""


def _run(command: list[str], log: Path, on_event: EventHandler,
         zygote: Zygote | None = None) -> None:
    """Run the worker `command` (forked from `zygote` when given); raise if it did not end well."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as sink:
        sink.write("$ " + " ".join(command) + (" (forked)" if zygote else "") + "\n")
        sink.flush()
        def relay(line: str) -> None:
            _relay(line, sink, on_event)
        code = zygote.run(command[2:], log, relay) if zygote else _popen(command, sink, relay)
    said = last_error(log)
    if code < 0:
        raise StudyKilled(died_of(-code) + (f": {said}" if said != NO_OUTPUT else ""))
    if code != 0:
        raise RuntimeError(f"exit code {code}: {said}")


def _relay(line: str, sink: TextIO, on_event: EventHandler) -> None:
    """A study's event to the display; anything else it printed to its log."""
    if line.startswith(EVENT_PREFIX):
        on_event(json.loads(line[len(EVENT_PREFIX):]))
    else:
        sink.write(line)


def study_env() -> dict[str, str]:
    """A study process's environment: the interpreter and environment for its probes, and the
    build to die with."""
    return {**os.environ, PLAIN_PYTHON: sys.executable, PLAIN_ENV: build_env(),
            BUILD_PID: str(os.getpid())}


def _popen(command: list[str], stderr: TextIO, relay: Callable[[str], None]) -> int:
    # its own session: a Ctrl-C at the terminal reaches only this process, which then
    # ends the study's whole process group (Scalene, the worker, its probes) itself
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                               bufsize=1, env=study_env(), start_new_session=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            relay(line)
        return process.wait()
    finally:
        end_group(process)


class Zygote:
    """The zygote of a build without Scalene: study processes forked after the model stack's
    imports (profiler/runner/zygote.py). Use it as a context manager; it ends with the build."""

    def __init__(self, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("a", encoding="utf-8")
        self.process = subprocess.Popen([sys.executable, "-m", "profiler.runner.zygote"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, bufsize=1, env=study_env(),
                                        start_new_session=True)

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        end_group(self.process)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.log.close()

    def run(self, argv: list[str], log: Path, relay: Callable[[str], None]) -> int:
        """Fork a worker for `argv`, relay what it prints, and return its exit code."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
            self.process.stdin.flush()
        except OSError:  # the zygote is gone
            raise RuntimeError(f"the process forking studies ended: {self._said()}") from None
        pid, finished = None, False
        try:
            for text, message in self._lines():
                if text:
                    relay(text)
                if message is None:
                    continue
                if "exit" not in message:
                    pid = message["pid"]
                elif message["pid"] == pid:
                    finished = True
                    return int(message["exit"])
        finally:
            if not finished:  # interrupted, or the zygote is gone: no study runs on
                self._abandon(pid)
        raise RuntimeError(f"the process forking studies ended: {self._said()}")

    def _lines(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Each line: the child's text, and the zygote's message that may end it."""
        assert self.process.stdout is not None
        for line in self.process.stdout:  # a child's unended last line may run into one
            text, found, message = line.partition(MESSAGE)
            yield text, json.loads(message) if found else None

    def _abandon(self, pid: int | None) -> None:
        """End the running child's session and pass over what it left, up to word of its end."""
        if pid is None:  # interrupted before the zygote said which child it forked
            pid = next((m["pid"] for _, m in self._lines() if m and "exit" not in m), None)
        if pid is None:
            return
        import psutil

        end_session(pid, lambda: not psutil.pid_exists(pid))
        for _, message in self._lines():
            if message and message["pid"] == pid and "exit" in message:
                return

    def _said(self) -> str:
        self.process.wait()
        return last_error(Path(self.log.name))


def end_group(process: subprocess.Popen[str], grace_s: float = 1.0) -> None:
    """End every process of `process`'s group: politely, then for sure after `grace_s`."""
    end_session(process.pid, lambda: process.poll() is not None, grace_s)


def end_session(pid: int, gone: Callable[[], bool], grace_s: float = 1.0) -> None:
    """End every process of the group `pid` leads (`gone` says when the leader has ended):
    politely, then for sure after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone
        deadline = time.monotonic() + grace_s
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.02)
        if sig == signal.SIGTERM and gone():  # its children may linger a moment
            time.sleep(0.05)


def died_of(number: int) -> str:
    """Say how a signal ended a study process."""
    name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
    if number == signal.SIGKILL:
        return f"killed by {name}: out of memory, or stopped from outside"
    return f"ended by {name}" + (" (a crash in native code)" if number in (
        signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE) else "")


def last_error(log: Path) -> str:
    """Return the last non-empty line of a log: usually the exception that ended the process."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace")
             .splitlines() if line.strip() and not line.startswith("$ ")]
    return lines[-1][:200] if lines else NO_OUTPUT


def finish_profile(staging: Path, outcome: dict[str, Any],
                   html: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reduce a raw profile to hotspots, render Scalene's view if asked, gzip the raw.

    Returns the hotspots and the updated Scalene outcome, both as plain data.
    """
    from profiler.analysis.hotspots import (
        load_profile,
        reduce_profile,
        write_standalone,
    )
    from profiler.storage import gzip_file

    raw = staging / outcome["profile"]
    page = None
    try:
        profile = load_profile(raw)
        hotspots = reduce_profile(profile)
    except (ValueError, KeyError, TypeError, EOFError) as exc:  # Scalene left it half-written
        hotspots = {"error": f"could not read the Scalene profile: {exc}"}
    else:
        page = write_standalone(profile, raw.with_suffix(".html")) if html else None
    gzip_file(raw, raw.with_suffix(".json.gz"))
    raw.unlink()
    return hotspots, {**outcome, "profile": outcome["profile"] + ".gz",
                      "html": str(page.relative_to(staging)) if page else None}


def _kept(finished: int) -> str:
    """`1 study it finished keeps its figures`, `2 studies ... keep their figures`."""
    if finished == 1:
        return "1 study it finished keeps its figures"
    return f"{finished} studies it finished keep their figures"
