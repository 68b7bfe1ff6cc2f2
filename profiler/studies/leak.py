"""Leak check: RSS after each of many identical iterations, and the slope of its steady state.

RSS often climbs over the first iterations while the tokenizer's caches and the allocator's
arenas fill; that is warm-up, not a leak. So warm-up iterations are run and discarded, and
the line is fitted only over the last half of the measured ones.
"""

from __future__ import annotations

import ctypes
import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from profiler.measure.fit import LinearFit, linear_fit
from profiler.measure.memory import rss_mb
from profiler.storage import Record
from profiler.studies.base import Study, StudyContext, emit


@dataclass(frozen=True)
class LeakVerdict:
    """The steady-state fit and what it means."""

    leak: bool
    steady_from: int  # index of the first measured iteration in the steady state
    fit: LinearFit
    threshold_mb_per_iteration: float


@dataclass(frozen=True)
class LeakResult(Record):
    """RSS after each iteration of one workload, and the verdict on its steady state."""

    texts_per_iteration: int
    batch_size: int
    warmup_rss_mb: list[float]
    rss_mb: list[float]
    leak: bool
    steady_from: int  # index of the first measured iteration in the steady state
    fit: LinearFit
    threshold_mb_per_iteration: float
    growth_mb_per_1000_iterations: float


class LeakStudy(Study):
    """Repeat one workload; flag a leak when steady-state RSS keeps rising."""

    NAME = "leak"
    TITLE = "Leak check"
    RESULT = LeakResult

    def run(self, ctx: StudyContext) -> LeakResult:
        """Warm up, measure RSS after every iteration, fit, then profile a few for Scalene."""
        timing = ctx.settings.timing
        texts = ctx.cycled(timing.leak_texts)
        size = min(ctx.settings.length_batch_size, len(texts))
        emit("config", label=f"{timing.leak_iterations} iterations of {len(texts)} texts",
             index=0, total=1)
        warmup = [iterate(ctx, texts, size) for _ in range(timing.leak_warmup)]
        rss = []
        with frozen():
            for n in range(timing.leak_iterations):
                rss.append(iterate(ctx, texts, size))
                emit("repeat", count=n + 1, value=f"{rss[-1]:,.1f} MB")
            verdict = judge(rss, ctx.settings.leak_threshold_mb)
            emit("done", label="leak check", summary="LEAK" if verdict.leak else "no leak")
            ctx.profiling.view(lambda: [iterate(ctx, texts, size)  # Scalene's leak detector
                                        for _ in range(max(3, timing.leak_warmup))])
        return LeakResult(texts_per_iteration=len(texts), batch_size=size, warmup_rss_mb=warmup,
                          rss_mb=rss, leak=verdict.leak, steady_from=verdict.steady_from,
                          fit=verdict.fit,
                          threshold_mb_per_iteration=verdict.threshold_mb_per_iteration,
                          growth_mb_per_1000_iterations=1000 * verdict.fit.slope)

    @staticmethod
    def headline(result: LeakResult) -> dict[str, Any]:
        """The verdict and the slope behind it."""
        fit = result.fit
        return {"leak": result.leak, "slope_mb_per_iteration": fit.slope,
                "slope_ci95": list(fit.slope_ci95) if fit.slope_ci95 else None,
                "texts_per_iteration": result.texts_per_iteration}


@contextmanager
def frozen() -> Iterator[None]:
    """Leave what lived through the warm-up out of the collector's scans (gc.freeze): each
    iteration's collection then looks at that iteration's objects only, not at the model
    stack's hundreds of thousands. Only a frozen object left in a reference cycle later would
    outlive its collection. The objects are unfrozen afterwards."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def iterate(ctx: StudyContext, texts: list[str], batch_size: int) -> float:
    """Encode the texts once, drop the result, free what was freed; return RSS in MB."""
    ctx.model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                     convert_to_numpy=True)
    gc.collect()
    release_free_memory()
    return rss_mb()


def release_free_memory() -> None:
    """Hand glibc's free heap back to the kernel, so RSS tracks live memory, not the allocator.

    Without it RSS swings by tens of MB between identical iterations as large buffers come and
    go, and only a leak bigger than that swing could show. A no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def judge(rss: list[float], threshold_mb: float) -> LeakVerdict:
    """LEAK when the steady-state slope's whole 95% interval lies above the threshold."""
    start = len(rss) // 2 if len(rss) >= 6 else 0
    steady = rss[start:]
    fit = linear_fit([float(i) for i in range(start, len(rss))], steady)
    low = fit.slope_ci95[0] if fit.slope_ci95 else fit.slope
    leak = low > threshold_mb and not math.isclose(max(steady), min(steady))
    return LeakVerdict(leak=leak, steady_from=start, fit=fit,
                       threshold_mb_per_iteration=threshold_mb)

