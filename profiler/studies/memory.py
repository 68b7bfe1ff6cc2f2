"""Memory study: RSS before and after the model loads and its peak while encoding, per batch size.

Each batch size runs in a fresh process (`profiler.runner.memory_probe`), so one size's
allocations cannot hide inside another's high-water mark. The probes start with the study's own
process and import the model stack alongside it; each is sent its batch size when its turn
comes, after the study process has waited for every probe to be ready.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import IO, Any

from profiler.config import Settings
from profiler.measure.fit import LinearFit, linear_fit
from profiler.measure.metrics import Metric, metric
from profiler.studies.base import (
    Study,
    StudyContext,
    measure_each,
    plain_python,
)
from profiler.workloads import request_of


@dataclass(frozen=True)
class ProbeFailure:
    """A batch size whose probe did not finish: out of memory, or another reason."""

    batch_size: int
    reason: str
    out_of_memory: bool


@dataclass(frozen=True)
class MemoryPoint:
    """One fresh process's memory at one batch size (MB)."""

    batch_size: int
    texts: int
    rss_start_mb: float
    rss_before_load_mb: float
    rss_after_load_mb: float
    peak_rss_mb: float
    peak_increase_mb: float
    ru_maxrss_mb: float
    samples: int
    sample_rate_hz: float
    encode_s: float
    cuda_memory_mb: dict[str, float] | None


class MemoryStudy(Study):
    """Fresh-process RSS per batch size, and a line through peak against batch size."""

    NAME = "memory"
    TITLE = "Memory"

    @classmethod
    def start_early(cls, settings: Settings) -> Probes:
        """Start a fresh probe per batch size: they import while the study process loads."""
        return Probes(probe_sizes(settings.batch_sizes, settings.quick))

    def run(self, ctx: StudyContext) -> dict[str, Any]:
        """Probe every batch size in its own process; profile one encode here for Scalene."""
        sizes = probe_sizes(ctx.settings.batch_sizes, ctx.settings.quick)
        probes = ctx.early.get(self.NAME) or Probes(sizes)
        probes.wait_ready()
        # RSS is per process, so probes may overlap; running them together cuts the wait
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = {size: pool.submit(probes.measure, ctx, size) for size in sizes}
            outcomes = measure_each(sizes, "batch {}", lambda size: pending[size].result(),
                                    describe)
        points = [p for p in outcomes if isinstance(p, MemoryPoint)]
        failed = [p for p in outcomes if isinstance(p, ProbeFailure)]
        if not points:
            raise RuntimeError(f"no batch size finished: {failed[0].reason}")
        largest = max(p.batch_size for p in points)  # the biggest batch that fits
        with ctx.profiling.on():  # Scalene's memory view of the biggest batch's encode
            ctx.model.encode(workload(ctx, largest), batch_size=largest)
        return {"points": [asdict(p) for p in points], "failed": [asdict(f) for f in failed],
                "limit_mb": ctx.settings.memory_limit_mb,
                "fit": fit_peak(points).to_dict() if len(points) > 1 else None}

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, Any]:
        """The model's resident size, the largest batch's peak and the cost per text."""
        points = result["points"]
        largest = max(points, key=lambda p: p["batch_size"])
        fit = result["fit"]
        return {"model_mb": sum(p["rss_after_load_mb"] - p["rss_before_load_mb"]
                                for p in points) / len(points),
                "largest_batch_size": largest["batch_size"],
                "largest_peak_rss_mb": largest["peak_rss_mb"],
                "largest_peak_increase_mb": largest["peak_increase_mb"],
                "mb_per_text": fit["slope"] if fit else None}

    @staticmethod
    def metrics(result: dict[str, Any]) -> list[Metric]:
        """The largest batch's peak resident memory, and the model's own size."""
        points = result["points"]
        largest = max(points, key=lambda p: p["batch_size"])
        return [metric("peak_rss_mb", f"peak memory at batch {largest['batch_size']}",
                       MemoryStudy.NAME, "MB", "lower", [largest["peak_rss_mb"]],
                       calibrated=False),
                metric("model_rss_mb", "model resident size", MemoryStudy.NAME, "MB", "lower",
                       [p["rss_after_load_mb"] - p["rss_before_load_mb"] for p in points],
                       calibrated=False)]


def probe_sizes(sizes: tuple[int, ...], quick: bool) -> tuple[int, ...]:
    """Every batch size; under --quick the smallest and the largest (a line needs two)."""
    if not quick:
        return sizes
    return tuple(sorted({min(sizes), max(sizes)}))


def workload(ctx: StudyContext, batch_size: int) -> list[str]:
    """The texts one probe encodes in one bulk call: spread over the corpus, whole batches."""
    count = max(ctx.settings.timing.texts_per_repeat, batch_size)
    return request_of(ctx.texts, batch_size * -(-count // batch_size))


class Probes:
    """One fresh `profiler.runner.memory_probe` process per batch size, started at once."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.errors: dict[int, IO[bytes]] = {  # each closed once its probe is read (_tail)
            size: tempfile.TemporaryFile() for size in sizes}  # noqa: SIM115
        self.processes = {size: subprocess.Popen(
            [plain_python(), "-m", "profiler.runner.memory_probe"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.errors[size]) for size in sizes}
        self.ready = False

    def wait_ready(self) -> None:
        """Wait until every probe has imported (or ended): then none takes CPU any more."""
        for process in self.processes.values() if not self.ready else ():
            assert process.stdout is not None
            process.stdout.readline()
        self.ready = True

    def measure(self, ctx: StudyContext, batch_size: int) -> MemoryPoint | ProbeFailure:
        """Send the probe of `batch_size` its request and read what it measured."""
        return probe(ctx, batch_size, self.processes[batch_size], self.errors[batch_size])


def probe(ctx: StudyContext, batch_size: int, process: subprocess.Popen[bytes] | None = None,
          errors: IO[bytes] | None = None) -> MemoryPoint | ProbeFailure:
    """Measure one batch size in a fresh interpreter (`process`, or one started now).

    A probe that runs out of memory (the limit, or the system's OOM killer) or fails
    otherwise is recorded as failed; the other batch sizes go on.
    """
    if process is None:
        probes = Probes((batch_size,))
        process, errors = probes.processes[batch_size], probes.errors[batch_size]
    request = {"model_path": ctx.info.path, "device": ctx.device, "batch_size": batch_size,
               "texts": workload(ctx, batch_size), "limit_mb": ctx.settings.memory_limit_mb,
               "trust_remote_code": ctx.settings.trust_remote_code}
    stdout, _ = process.communicate(json.dumps(request).encode())  # a dead pipe is ignored
    if process.returncode == -signal.SIGKILL:
        return ProbeFailure(batch_size, "out of memory: the process was killed (SIGKILL)", True)
    if process.returncode != 0:
        tail = _tail(errors) or f"exit code {process.returncode}"
        return ProbeFailure(batch_size, f"the probe failed: {tail[:200]}", False)
    found = json.loads(stdout.decode().strip().splitlines()[-1])
    if "out_of_memory" in found:
        limit = ctx.settings.memory_limit_mb
        within = f" within the {limit:,.0f} MB limit" if limit else ""
        return ProbeFailure(batch_size, f"out of memory{within}: {found['out_of_memory']}", True)
    return MemoryPoint(**found)


def _tail(errors: IO[bytes] | None) -> str:
    """The last line a probe wrote to stderr ("" when none)."""
    if errors is None:
        return ""
    errors.seek(0)
    lines = errors.read().decode(errors="replace").strip().splitlines()
    errors.close()
    return lines[-1] if lines else ""


def describe(outcome: MemoryPoint | ProbeFailure) -> str:
    """One line for the progress display."""
    if isinstance(outcome, ProbeFailure):
        return "out of memory" if outcome.out_of_memory else "failed"
    return f"peak +{outcome.peak_increase_mb:,.0f} MB"


def fit_peak(points: list[MemoryPoint]) -> LinearFit:
    """Fit the peak increase over the loaded model against batch size: MB per text in a batch."""
    return linear_fit([float(p.batch_size) for p in points],
                      [p.peak_increase_mb for p in points])
