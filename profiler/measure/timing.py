"""Timers that synchronize the device, and the warm-up-then-repeat loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from profiler.config import Timing


def synchronize(device: str) -> None:
    """Wait for queued device work so wall-clock timers measure it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    elif device == "mps":
        import torch

        torch.mps.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    """Run `fn` once and return its wall time in seconds, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class RepeatPlan:
    """When to stop repeating: after both a minimum time and a minimum count, or at a cap."""

    warmup: int
    min_time_s: float
    min_repeats: int
    max_repeats: int

    @classmethod
    def from_timing(cls, timing: Timing) -> RepeatPlan:
        """Take the plan from the run's timing settings."""
        return cls(timing.warmup_repeats, timing.min_time_s, timing.min_repeats,
                   timing.max_repeats)

    def done(self, count: int, elapsed_s: float) -> bool:
        """Return True once enough repeats and time have been measured."""
        enough = count >= self.min_repeats and elapsed_s >= self.min_time_s
        return enough or count >= self.max_repeats


def repeat(fn: Callable[[], float], plan: RepeatPlan,
           on_repeat: Callable[[int, float], None] | None = None) -> list[float]:
    """Call `fn` (which returns its own measured seconds) for warm-up, then until `plan` is met."""
    for _ in range(plan.warmup):
        fn()
    samples: list[float] = []
    while not plan.done(len(samples), sum(samples)):
        samples.append(fn())
        if on_repeat is not None:
            on_repeat(len(samples), samples[-1])
    return samples
