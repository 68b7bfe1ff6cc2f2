"""Resident memory: current RSS, a background peak sampler, and CUDA allocator peaks."""

from __future__ import annotations

import resource
import sys
import threading
import time
from types import TracebackType

import psutil

MB = 1024 * 1024


def rss_mb() -> float:
    """Return this process's resident set size in MB."""
    return float(psutil.Process().memory_info().rss) / MB


def max_rss_mb() -> float:
    """Return the kernel's high-water mark of RSS (ru_maxrss) in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


class PeakRss:
    """Sample RSS in a background thread at `hz` while the block runs; keep the peak."""

    def __init__(self, hz: float = 200.0) -> None:
        self.interval = 1.0 / hz
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self.samples = 0
        self.seconds = 0.0
        self._began = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = rss_mb()
        self._began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._began
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def increase_mb(self) -> float:
        """Peak RSS above the RSS when the block began."""
        return self.peak_mb - self.start_mb

    @property
    def rate_hz(self) -> float:
        """How often RSS was actually sampled while the block ran."""
        return self.samples / self.seconds if self.seconds else 0.0

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, process.memory_info().rss / MB)
            self.samples += 1


def cuda_reset_peak(device: str) -> None:
    """Reset CUDA's peak counters so the next reading covers one configuration."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def cuda_peaks_mb(device: str) -> dict[str, float] | None:
    """Return CUDA max allocated and reserved memory in MB, or None off CUDA."""
    if not device.startswith("cuda"):
        return None
    import torch

    return {"max_allocated_mb": torch.cuda.max_memory_allocated() / MB,
            "max_reserved_mb": torch.cuda.max_memory_reserved() / MB}
