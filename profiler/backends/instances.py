"""Parallel model instances: N processes with M threads each, as CPU serving stacks scale.

Each instance is a fresh process (`profiler.runner.instance`) holding its own copy of the model.
One `encode` call deals the texts round-robin over the instances (so each gets the same mix of
lengths), lets them encode at once, and puts the rows back in the order given.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from typing import IO, TYPE_CHECKING, Any

from profiler.errors import ProfilerError
from profiler.runner.instance import frame, read_frame
from profiler.runner.probes import plain_env

if TYPE_CHECKING:
    import numpy as np

STOP_TIMEOUT_S = 10.0


def layouts(threads: int) -> list[tuple[int, int]]:
    """(instances, threads each) to try on `threads` cores: 2, 4 and one per core, evenly split."""
    counts = sorted({n for n in (2, 4, threads) if 2 <= n <= threads and threads % n == 0})
    return [(n, threads // n) for n in counts]


class InstancePool:
    """`instances` model processes of `threads` threads each, used like `model.encode`."""

    def __init__(self, python: str, model_path: str, device: str, instances: int, threads: int,
                 trust_remote_code: bool = False) -> None:
        request = {"model_path": model_path, "device": device, "threads": threads,
                   "trust_remote_code": trust_remote_code}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []  # each instance's stderr: a file, so it never blocks
        try:
            for _ in range(instances):
                self.logs.append(tempfile.TemporaryFile())  # noqa: SIM115 (closed in close())
                process = subprocess.Popen([python, "-m", "profiler.runner.instance"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=self.logs[-1], env=plain_env())
                self.processes.append(process)
                self._send(len(self.processes) - 1, json.dumps(request).encode() + b"\n")
            for index in range(instances):  # they load at once; wait for each
                self._receive(index)
        except BaseException:
            self.close()
            raise

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """One embedding row per text, in the order given."""
        import numpy as np

        count = len(self.processes)
        shares = [(k, texts[k::count]) for k in range(count) if texts[k::count]]
        for k, share in shares:
            self._send(k, frame((share, batch_size)))
        parts = [(k, self._receive(k)) for k, _ in shares]
        width = parts[0][1].shape[1]
        rows = np.empty((len(texts), width), dtype=parts[0][1].dtype)
        for k, part in parts:
            rows[k::count] = part
        return rows

    def rss_mb(self) -> float:
        """The instances' resident memory together, in MB."""
        import psutil

        return sum(psutil.Process(p.pid).memory_info().rss for p in self.processes) / 2**20

    def close(self) -> None:
        """End every instance: close its input, then kill it if it does not stop."""
        for process in self.processes:
            if process.stdin is not None and not process.stdin.closed:
                with contextlib.suppress(BrokenPipeError):  # a dead instance's unread input
                    process.stdin.close()
        for process in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        for log in self.logs:
            log.close()

    def _send(self, index: int, data: bytes) -> None:
        """Write to an instance; one that has died is reported when its answer is read."""
        stream = self.processes[index].stdin
        assert stream is not None
        try:
            stream.write(data)
            stream.flush()
        except BrokenPipeError:
            pass

    def _receive(self, index: int) -> Any:
        process = self.processes[index]
        assert process.stdout is not None
        try:
            return read_frame(process.stdout)
        except EOFError:
            process.wait()
            self.logs[index].seek(0)
            tail = self.logs[index].read().decode(errors="replace").strip().splitlines()
            last = tail[-1] if tail else f"exit code {process.returncode}"
            raise ProfilerError(f"a model instance failed: {last[:200]}") from None
