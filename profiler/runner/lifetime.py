"""A study process never outlives the build that started it.

The build runs each study in a session of its own (so a Ctrl-C at the terminal reaches only
the build, which then ends the study's whole group). When the build itself dies without that
chance (SIGKILL, the OOM killer), the study's group would run on beside the next build. So the
worker asks the kernel to kill it with its parent (Linux's parent-death signal: at once, and
whatever the worker's threads are doing), and watches the build's process as well, for the
case where Scalene stands between them: once the build is gone it ends its own group (Scalene,
the worker and any probe it started). Probes ask for the parent-death signal too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

BUILD_PID = "PROFILER_BUILD_PID"  # set by the runner for each study process
POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the watch below still ends the group
        return


def watch_build() -> None:
    """End this process group soon after the build process named in the environment dies."""
    import psutil

    die_with_parent()
    pid = os.environ.get(BUILD_PID)
    if not pid or not pid.isdigit():
        return
    try:
        build = psutil.Process(int(pid))
        began = build.create_time()
    except psutil.Error:
        _end_group()
        return

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            try:
                alive = build.is_running() and build.create_time() == began \
                    and build.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            if not alive:
                _end_group()

    threading.Thread(target=watch, name="build-watch", daemon=True).start()


def _end_group() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)
