"""The machine's measured matmul peak per dtype, and the CPU flags that explain it."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.errors import ProfilerError
from profiler.measure.stats import Stats, summarize
from profiler.measure.timing import timed
from profiler.storage import Record

# Vector and matrix extensions that decide how fast fp32, bf16 and int8 matmuls run.
FLAGS_OF_INTEREST = ("fma", "avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16",
                     "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                     "asimd", "sve", "bf16", "i8mm")  # the last four are Arm's names
CPUINFO = Path("/proc/cpuinfo")
MIN_SIZE = 128  # the smallest matmul a peak is measured on


@dataclass(frozen=True)
class Peak(Record):
    """Measured throughput of a square matmul: every repeat kept, the best one quoted."""

    device: str
    dtype: str
    size: int
    gflops: Stats
    best_gflops: float
    threads: int


def measure_peak(device: str, dtype: str, size: int = 1024, min_time_s: float = 0.5,
                 repeats: int = 5) -> Peak | None:
    """Time `size` x `size` matmuls; return None if `dtype` has no matmul kernel on `device`.

    Where one matmul takes longer than `min_time_s` (a dtype without a fast kernel on this
    machine), the size is halved until one fits, so every dtype costs about the same time;
    the size used is recorded.
    """
    import torch

    _check_device(device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    while True:
        a, b, out = (torch.randn(size, size).to(device=device, dtype=torch_dtype)
                     for _ in range(3))
        matmul = functools.partial(torch.mm, a, b, out=out)
        try:
            first_s = timed(matmul, device)  # warm-up: kernel choice, caches
        except (NotImplementedError, RuntimeError) as exc:
            if _unsupported(exc):
                return None
            raise
        if first_s <= min_time_s or size <= MIN_SIZE:
            break
        # a dtype with a slow kernel here: a smaller matmul shows the same rate in less time
        size = max(MIN_SIZE, size >> max(1, math.ceil(math.log2(first_s / min_time_s) / 3)))
    per_call_s = timed(matmul, device)
    calls = max(1, math.ceil(min_time_s / max(per_call_s, 1e-9)))
    flop = 2.0 * size**3 * calls
    samples = [flop / timed(functools.partial(_repeat_mm, matmul, calls), device) / 1e9
               for _ in range(repeats)]
    stats = summarize(samples)
    return Peak(device, dtype, size, stats, stats.max, torch.get_num_threads())


def peak_dtypes(device: str) -> tuple[str, ...]:
    """Return the dtypes worth measuring on `device`."""
    if device.startswith(("cuda", "mps")):  # half precision is native on GPUs
        return ("float32", "bfloat16", "float16")
    return ("float32", "bfloat16")


def cpu_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """Return the matmul-relevant CPU flags from /proc/cpuinfo; [] where there is none."""
    try:
        return parse_cpu_flags(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # macOS, Windows, sandboxes
        return []


def parse_cpu_flags(text: str) -> list[str]:
    """Return the flags of interest on the first `flags` (x86) or `Features` (Arm) line."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [flag for flag in FLAGS_OF_INTEREST if flag in present]
    return []


def _check_device(device: str) -> None:
    import torch

    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": has_mps}
    if not available.get(device.split(":")[0], False):
        raise ProfilerError(f"device {device} is not available on this machine")


def _unsupported(exc: Exception) -> bool:
    # CPU kernels raise NotImplementedError ("addmm_impl_cpu_" not implemented for 'UInt16');
    # cuBLAS raises RuntimeError with CUBLAS_STATUS_NOT_SUPPORTED on GPUs without the dtype.
    message = str(exc).lower()
    return isinstance(exc, NotImplementedError) or "not supported" in message \
        or "not_supported" in message


def _repeat_mm(matmul: Callable[[], Any], calls: int) -> None:
    for _ in range(calls):
        matmul()
