"""Matmul peak measurement and CPU flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from profiler.errors import ProfilerError
from profiler.measure.peak import MIN_SIZE, cpu_flags, measure_peak, parse_cpu_flags, peak_dtypes

X86_CPUINFO = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme sse sse2 fma avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile
bugs		: spectre_v1

processor	: 1
flags		: fpu sse
"""
ARM_CPUINFO = """processor	: 0
BogoMIPS	: 243.75
Features	: fp asimd evtstrm aes crc32 atomics fphp asimdhp cpuid sve i8mm bf16
"""


def test_small_matmul_gives_positive_gflops() -> None:
    peak = measure_peak("cpu", "float32", size=64, min_time_s=0.01, repeats=3)
    assert peak is not None
    assert (peak.device, peak.dtype, peak.size) == ("cpu", "float32", 64)
    assert peak.gflops.n == 3
    assert all(sample > 0 for sample in peak.gflops.samples)
    assert peak.best_gflops == max(peak.gflops.samples)  # peaks are maxima
    assert peak.threads >= 1
    assert peak.to_dict()["gflops"]["samples"] == peak.gflops.samples


def test_a_matmul_slower_than_the_time_asked_is_measured_smaller() -> None:
    # no matmul of 512 takes a microsecond: the size shrinks to the smallest, and says so
    peak = measure_peak("cpu", "float32", size=512, min_time_s=1e-6, repeats=2)
    assert peak is not None and peak.size == MIN_SIZE
    assert peak.gflops.n == 2 and peak.best_gflops > 0
    fits = measure_peak("cpu", "float32", size=64, min_time_s=0.05, repeats=2)
    assert fits is not None and fits.size == 64  # one call fits the time: the size asked for


def test_dtype_without_a_matmul_kernel_gives_none() -> None:
    # "addmm_impl_cpu_" not implemented for 'UInt16'
    assert measure_peak("cpu", "uint16", size=8, min_time_s=0.0, repeats=1) is None


def test_cublas_not_supported_gives_none_and_other_errors_propagate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def fails_with(message: str) -> Any:
        def mm(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(message)
        return mm

    monkeypatch.setattr(torch, "mm", fails_with("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED"))
    assert measure_peak("cpu", "float32", size=8, min_time_s=0.0, repeats=1) is None
    monkeypatch.setattr(torch, "mm", fails_with("out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        measure_peak("cpu", "float32", size=8, min_time_s=0.0, repeats=1)


def test_missing_device_and_unknown_dtype_are_errors() -> None:
    import torch

    with pytest.raises(ValueError, match="unknown dtype"):
        measure_peak("cpu", "float99", size=8)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProfilerError, match="device cuda is not available"):
        measure_peak("cuda", "float32", size=8)


def test_dtypes_per_device() -> None:
    assert peak_dtypes("cpu") == ("float32", "bfloat16")
    assert peak_dtypes("cuda:0") == ("float32", "bfloat16", "float16")


def test_parse_cpu_flags() -> None:
    # first processor only; order is FLAGS_OF_INTEREST's, not the file's
    assert parse_cpu_flags(X86_CPUINFO) == ["fma", "avx2", "avx512f", "avx512_vnni",
                                            "avx512_bf16", "amx_tile", "amx_bf16"]
    assert parse_cpu_flags(ARM_CPUINFO) == ["asimd", "sve", "bf16", "i8mm"]
    assert parse_cpu_flags("processor : 0\n") == []


def test_cpu_flags_reads_a_file_or_gives_empty(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO, encoding="utf-8")
    assert "amx_bf16" in cpu_flags(tmp_path / "cpuinfo")
    assert cpu_flags(tmp_path / "missing") == []
