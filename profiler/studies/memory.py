"""Memory study: RSS before and after the model loads and its peak while encoding, per batch size.

Each batch size runs in a fresh process (`profiler.runner.memory_probe`), so one size's
allocations cannot hide inside another's high-water mark. The worker starts the probes before its
own imports (profiler.runner.probes), so they import the model stack alongside it; each is sent
its batch size when its turn comes.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from profiler.measure.fit import LinearFit, linear_fit
from profiler.measure.metrics import Metric, metric
from profiler.runner.probes import Probe, probe_sizes
from profiler.storage import Record
from profiler.studies.base import Study, StudyContext, measure_each
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

    @property
    def model_mb(self) -> float:
        """What loading the model added to the process."""
        return self.rss_after_load_mb - self.rss_before_load_mb


@dataclass(frozen=True)
class MemoryResult(Record):
    """Fresh-process memory per batch size, the sizes that failed, and the peak's line."""

    points: list[MemoryPoint]
    fit: LinearFit | None  # peak increase against batch size; None with one size
    failed: list[ProbeFailure] = field(default_factory=list)
    limit_mb: float | None = None

    @property
    def largest(self) -> MemoryPoint:
        """The largest batch size that finished."""
        return max(self.points, key=lambda p: p.batch_size)


class MemoryStudy(Study):
    """Fresh-process RSS per batch size, and a line through peak against batch size."""

    NAME = "memory"
    TITLE = "Memory"
    RESULT = MemoryResult

    def run(self, ctx: StudyContext) -> MemoryResult:
        """Probe every batch size in its own process; profile one encode here for Scalene."""
        sizes = probe_sizes(ctx.settings.batch_sizes, ctx.settings.quick)
        probes = {size: ctx.probes.get(size) or Probe() for size in sizes}  # the worker's, if
        for started in probes.values():  # it started them
            started.wait_ready()
        # RSS is per process, so probes may overlap; running them together cuts the wait
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = {size: pool.submit(probe, ctx, size, probes[size]) for size in sizes}
            outcomes = measure_each(sizes, "batch {}", lambda size: pending[size].result(),
                                    describe)
        points = [p for p in outcomes if isinstance(p, MemoryPoint)]
        failed = [p for p in outcomes if isinstance(p, ProbeFailure)]
        if not points:
            raise RuntimeError(f"no batch size finished: {failed[0].reason}")
        largest = max(p.batch_size for p in points)  # the biggest batch that fits
        # Scalene's memory view of the biggest batch's encode
        ctx.profiling.view(lambda: ctx.model.encode(workload(ctx, largest), batch_size=largest))
        return MemoryResult(points=points, failed=failed, limit_mb=ctx.settings.memory_limit_mb,
                            fit=fit_peak(points) if len(points) > 1 else None)

    @staticmethod
    def headline(result: MemoryResult) -> dict[str, Any]:
        """The model's resident size, the largest batch's peak and the cost per text."""
        largest = result.largest
        return {"model_mb": sum(p.model_mb for p in result.points) / len(result.points),
                "largest_batch_size": largest.batch_size,
                "largest_peak_rss_mb": largest.peak_rss_mb,
                "largest_peak_increase_mb": largest.peak_increase_mb,
                "mb_per_text": result.fit.slope if result.fit else None}

    @staticmethod
    def metrics(result: MemoryResult) -> list[Metric]:
        """The largest batch's peak resident memory, and the model's own size."""
        largest = result.largest
        return [metric("peak_rss_mb", f"peak memory at batch {largest.batch_size}",
                       MemoryStudy.NAME, "MB", "lower", [largest.peak_rss_mb], calibrated=False),
                metric("model_rss_mb", "model resident size", MemoryStudy.NAME, "MB", "lower",
                       [p.model_mb for p in result.points], calibrated=False)]


def workload(ctx: StudyContext, batch_size: int) -> list[str]:
    """The texts one probe encodes in one bulk call: spread over the corpus, whole batches."""
    count = max(ctx.settings.timing.texts_per_repeat, batch_size)
    return request_of(ctx.texts, batch_size * -(-count // batch_size))


def probe(ctx: StudyContext, batch_size: int, started: Probe | None = None
          ) -> MemoryPoint | ProbeFailure:
    """Measure one batch size in a fresh interpreter (`started`, or one started now).

    A probe that runs out of memory (the limit, or the system's OOM killer) or fails
    otherwise is recorded as failed; the other batch sizes go on.
    """
    request = {"model_path": ctx.info.path, "device": ctx.device, "batch_size": batch_size,
               "texts": workload(ctx, batch_size), "limit_mb": ctx.settings.memory_limit_mb,
               "trust_remote_code": ctx.settings.trust_remote_code}
    code, stdout, error = (started or Probe()).ask(json.dumps(request))
    if code == -signal.SIGKILL:
        return ProbeFailure(batch_size, "out of memory: the process was killed (SIGKILL)", True)
    if code != 0:
        return ProbeFailure(batch_size, f"the probe failed: {(error or f'exit code {code}')[:200]}",
                            False)
    found = json.loads(stdout.strip().splitlines()[-1])
    if "out_of_memory" in found:
        limit = ctx.settings.memory_limit_mb
        within = f" within the {limit:,.0f} MB limit" if limit else ""
        return ProbeFailure(batch_size, f"out of memory{within}: {found['out_of_memory']}", True)
    return MemoryPoint(**found)


def describe(outcome: MemoryPoint | ProbeFailure) -> str:
    """One line for the progress display."""
    if isinstance(outcome, ProbeFailure):
        return "out of memory" if outcome.out_of_memory else "failed"
    return f"peak +{outcome.peak_increase_mb:,.0f} MB"


def fit_peak(points: list[MemoryPoint]) -> LinearFit:
    """Fit the peak increase over the loaded model against batch size: MB per text in a batch."""
    return linear_fit([float(p.batch_size) for p in points],
                      [p.peak_increase_mb for p in points])
