"""Fresh processes a study measures in, started before its own process imports the model stack.

A fresh interpreter spends most of its start importing torch and sentence-transformers. The
memory study's probes (`profiler.runner.memory_probe`) are started first thing in the study
process, so their imports run beside the study process's own; each says when it has imported
and then waits for its request. The worker waits until every probe is ready before any study
measures, so no timed pass shares the cores with an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import IO

# Under Scalene, sys.executable is an alias that profiles children too; the build passes the
# plain interpreter here for studies that need a fresh, unprofiled process ...
PLAIN_PYTHON = "PROFILER_PLAIN_PYTHON"
# ... and its own values of what Scalene's launcher sets in the environment: its allocator
# (LD_PRELOAD) would otherwise be inherited, adding its memory and its malloc hooks
PLAIN_ENV = "PROFILER_PLAIN_ENV"
SCALENE_SETS = ("LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "PYTHONMALLOC",
                "LC_ALL", "PATH")


def plain_python() -> str:
    """Return the interpreter for a fresh child process that Scalene does not profile."""
    return os.environ.get(PLAIN_PYTHON, sys.executable)


def build_env() -> str:
    """The build's own values of what Scalene sets, for PLAIN_ENV (None: unset)."""
    return json.dumps({key: os.environ.get(key) for key in SCALENE_SETS})


def plain_env() -> dict[str, str]:
    """The environment for a fresh child process: this one's, with the build's own values of
    what Scalene set (as it is where no build passed them)."""
    env = dict(os.environ)
    saved = json.loads(env.get(PLAIN_ENV) or "{}")
    for key in SCALENE_SETS:
        if key not in saved:
            continue
        if saved[key] is None:
            env.pop(key, None)
        else:
            env[key] = saved[key]
    return env


def probe_sizes(sizes: tuple[int, ...], quick: bool) -> tuple[int, ...]:
    """The memory study's batch sizes: every one; under --quick the smallest and the largest."""
    if not quick:
        return sizes
    return tuple(sorted({min(sizes), max(sizes)}))


class Probe:
    """One fresh `profiler.runner.memory_probe` process, importing from the moment it starts."""

    def __init__(self) -> None:
        self.errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `ask`)
        self.process = subprocess.Popen([plain_python(), "-m", "profiler.runner.memory_probe"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, env=plain_env())
        self.ready = False

    def wait_ready(self) -> None:
        """Return once the probe has imported (or ended): then it takes no more CPU."""
        if not self.ready:
            assert self.process.stdout is not None
            self.process.stdout.readline()
            self.ready = True

    def ask(self, request: str) -> tuple[int, str, str]:
        """Send the request; return the exit code, what it printed and its last stderr line."""
        stdout, _ = self.process.communicate(request.encode())  # a dead pipe is ignored
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        self.errors.close()
        return self.process.returncode, stdout.decode(), lines[-1] if lines else ""


def start_early(studies: list[str], batch_sizes: tuple[int, ...],
                quick: bool) -> dict[int, Probe]:
    """The memory study's probes, one per batch size, when `studies` include it; else none."""
    if "memory" not in studies:
        return {}
    return {size: Probe() for size in probe_sizes(batch_sizes, quick)}
