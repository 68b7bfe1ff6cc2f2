"""Start unprofiled study processes by forking one that has already imported the model stack.

A fresh Python process spends 5-12 s on a 2-core machine importing torch, transformers and
sentence-transformers: more than a small model's whole study. A build without Scalene (which
must start each profiled process itself) starts this zygote once, and forks every study process
from it, as gunicorn's preload does, so the build pays the imports once. The zygote never runs
a model, so no thread pool exists to be lost across the fork. It runs one study at a time: it
forks, says the child's pid, waits for it, and says how it ended. Each child starts a session
of its own, titled like the worker's command line, so the build ends it (and its probes) as one
group and `ps` shows which study it is, as for a fresh process.

Run as `python -m profiler.runner.zygote`; requests are JSON lines on stdin, {"argv": [RUN_DIR,
STUDIES], "log": PATH}; the zygote's own lines on stdout start with `MESSAGE`, between the
child's (the child writes its events to the same pipe).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import traceback
from typing import Any

MESSAGE = "\x1eprofiler-zygote "  # {"pid": n} when a child started, {"pid": n, "exit": code}
PRELOAD = ("profiler.runner.worker", "torch", "transformers", "sentence_transformers",
           "profiler.model", "profiler.studies")


def main() -> int:
    """Import the model stack, then fork a study process per request until stdin closes."""
    from profiler.runner.lifetime import watch_build

    watch_build()  # this process's own session ends with the build
    for module in PRELOAD:
        importlib.import_module(module)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        say({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
    return 0


def say(message: dict[str, Any]) -> None:
    """Write one of the zygote's own lines (flushed: a child forked later must not repeat it)."""
    sys.stdout.write(MESSAGE + json.dumps(message) + "\n")
    sys.stdout.flush()


def _child(request: dict[str, Any]) -> None:
    """Become the study process: own session, title, stderr to the log; never returns."""
    code = 1
    atexit._clear()  # the zygote's exit handlers are not this study's
    try:
        os.setsid()
        _title(request["argv"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the requests are the zygote's to read
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 2)
        from profiler.runner import worker
        from profiler.runner.lifetime import watch_build

        watch_build()
        code = worker.main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # a study's error: its traceback goes to the log, as in a process
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()  # the study's own, such as removing its temporary exports
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _title(argv: list[str]) -> None:
    from setproctitle import setproctitle

    from profiler.runner import worker

    setproctitle(" ".join([sys.executable, worker.__file__, *argv]))


if __name__ == "__main__":
    sys.exit(main())
