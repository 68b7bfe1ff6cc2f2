"""Time Ctrl-C in every phase of a build: how long until it stops, and what it leaves running.

Run alone on the machine: `python -m profiler.faultcheck [--model PATH]`. For each phase it
starts a build (quick, or a full one of the batch-size study where the phase is a full build's)
in a temporary copy of the project, in a session of its own,
waits until the phase is under way, sends SIGINT to the whole process group (what a terminal's
Ctrl-C does) and prints the seconds until the build exited, its exit status and last line, and
any process of the build still alive. Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import psutil

from profiler.benchmark import copy_project

STOP_TARGET_S = 3.0


@dataclass
class Seen:
    """What a running build has shown so far: its output lines and the helpers it started."""

    lines: list[str] = field(default_factory=list)
    children: dict[str, float] = field(default_factory=dict)  # first seen, by role
    gone: dict[str, float] = field(default_factory=dict)  # last seen, by role


Trigger = Callable[[Seen], float | None]  # when the phase began, or None if not yet


def after_line(text: str) -> Trigger:
    return lambda seen: 0.0 if any(text in line for line in seen.lines) else None


def while_running(role: str) -> Trigger:
    return lambda seen: seen.children.get(role)


def after_exit(role: str) -> Trigger:
    return lambda seen: seen.gone.get(role)


ROLES = ("cold_start", "memory_probe", "mkdocs", "worker")
QUICK, COLD = ("--quick",), ("--study", "batch_size")  # a quick build has no cold start
PHASES: list[tuple[str, tuple[str, ...], Trigger, float]] = [
    # (phase, build arguments, when the phase is under way, how long to wait into it)
    ("model load", QUICK, after_line("Batch size and workloads"), 1.0),
    ("cold start (fresh process)", COLD, while_running("cold_start"), 0.5),
    ("batch-size rounds", COLD, after_exit("cold_start"), 2.0),
    ("text-length study", QUICK, after_line("Text length"), 0.5),
    ("memory probes", QUICK, while_running("memory_probe"), 0.5),
    ("leak check", QUICK, after_line("Leak check"), 0.5),
    ("stage breakdown", QUICK, after_line("Stage breakdown"), 0.5),
    ("optimizations", QUICK, after_line("Optimizations"), 3.0),
    ("serving runs", QUICK, after_line("Serving capacity"), 2.0),
    ("profile reduction", QUICK, after_line("Scalene profiles"), 0.3),
    ("site build", QUICK, while_running("mkdocs"), 0.3),
]


def role(process: psutil.Process) -> str | None:
    """Which helper of the build `process` is, by its command line."""
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:
        return None
    return next((name for name in ROLES if name in line), None)


def interrupt(project: Path, args: tuple[str, ...], trigger: Trigger, wait_s: float) -> str:
    """One build, interrupted `wait_s` into the phase `trigger` detects; a line of findings."""
    build = subprocess.Popen([sys.executable, "-m", "profiler", "build", *args], cwd=project,
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                             start_new_session=True)
    seen, stderr = Seen(), build.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: seen.lines.extend(iter(stderr.readline, "")),
                              daemon=True)
    reader.start()
    began, family = None, psutil.Process(build.pid)
    while build.poll() is None and (began is None or time.monotonic() < began + wait_s):
        watch(family, seen)
        if began is None and trigger(seen) is not None:
            began = time.monotonic()
        time.sleep(0.02)
    if build.poll() is not None:
        return f"not reached (the build ended, exit {build.returncode})"
    helpers = family.children(recursive=True)
    os.killpg(build.pid, signal.SIGINT)
    sent = time.monotonic()
    try:
        build.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    took = time.monotonic() - sent
    reader.join(timeout=5)
    time.sleep(0.2)
    left = [p.pid for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    last = seen.lines[-1].strip() if seen.lines else ""
    verdict = "ok" if took <= STOP_TARGET_S and not left else "SLOW" if not left else "LEFT"
    return (f"{took:5.2f} s  exit {build.returncode}  {verdict:<4}  "
            f"{'alive: ' + str(left) if left else ''}{last[:70]}")


def watch(family: psutil.Process, seen: Seen) -> None:
    """Note which helpers are running now and which have ended."""
    now, running = time.monotonic(), set()
    try:
        children = family.children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        name = role(child)
        if name:
            running.add(name)
            seen.children.setdefault(name, now)
    for name in set(seen.children) - running:
        seen.gone.setdefault(name, now)


@click.command()
@click.option("--model", default="sentence-transformers/all-MiniLM-L6-v2",
              help="Hub id or model directory to build with.")
@click.option("--phase", "only", multiple=True, help="Only these phases (by their first word).")
def main(model: str, only: tuple[str, ...]) -> None:
    """Print, for each phase of a build, how long Ctrl-C takes to stop it."""
    print(f"Ctrl-C in each phase of `profiler build` (target <= {STOP_TARGET_S:.0f} s, "
          "nothing left running):")
    for phase, args, trigger, wait_s in PHASES:
        if only and phase.split()[0] not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="profiler-faults-") as tmp:
            project = copy_project(Path.cwd(), Path(tmp))
            found = interrupt(project, (*args, "--model", model), trigger, wait_s)
            print(f"  {phase:<28} {' '.join(args):<20} {found}", flush=True)


if __name__ == "__main__":
    main()
