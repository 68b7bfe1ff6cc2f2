"""One writer at a time: commands that write data/, docs/ or site/ hold the project's lock.

The lock is an advisory `flock` on `.profiler.lock` in the project folder, so the kernel
releases it when its holder dies, however it dies; the file names the holder (PID, command,
start time) for the message a second command shows, and for noticing a lock left behind.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from profiler.errors import ProfilerError

LOCK_FILE = ".profiler.lock"


@contextmanager
def project_lock(root: Path, command: str) -> Iterator[str | None]:
    """Hold the project's lock; yield a note when it was taken over from a dead process.

    Raises ProfilerError at once, naming the holder, when a live process holds it.
    """
    path = root / LOCK_FILE
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise ProfilerError(f"could not open the lock {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProfilerError(f"another profiler command is using {root} "
                                f"({describe(holder(handle))}); wait for it to end or stop "
                                "it") from None
        left = holder(handle)
        note = (f"took over the lock left by {describe(left)}, which is no longer running"
                if left and not _alive(left) else None)
        _write_holder(handle, command)
        try:
            yield note
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(handle: Any) -> dict[str, Any] | None:
    """The holder the lock file names, if it names one."""
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "null")
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def describe(who: dict[str, Any] | None) -> str:
    """'PID 123, `profiler build`, since 2026-11-22 02:50:01 UTC'."""
    if not who:
        return "a process that did not say which"
    return f"PID {who['pid']}, `{who.get('command', 'profiler')}`, since {who.get('since', '?')}"


def _alive(who: dict[str, Any]) -> bool:
    try:
        process = psutil.Process(who["pid"])
        return process.create_time() <= who.get("created", float("inf")) + 1
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _write_holder(handle: Any, command: str) -> None:
    me = psutil.Process()
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({
        "pid": os.getpid(), "command": command, "created": me.create_time(),
        "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "argv": sys.argv[1:]}) + "\n")
    handle.flush()
