"""What machine and software a run measured."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import psutil

# the libraries whose versions can move a timing; history judges runs across the first five
TIMED_LIBRARIES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "openvino")
LIBRARIES = (*TIMED_LIBRARIES, "tokenizers", "numpy", "scalene", "psutil")


def system_info(device: str) -> dict[str, Any]:
    """Describe the CPU, memory, OS, Python, library versions and the device used."""
    import torch

    logical, load = psutil.cpu_count(logical=True), load_average()
    return {
        "cpu_model": cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": logical,
        "load_avg_1m": load,  # at the build's start: other processes competing for the cores
        "busy": load is not None and logical is not None and load > logical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "device": device,
        "gpu": _gpu(device),
    }


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS has none (Windows)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """Return the CPU's marketing name where the OS tells it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu(device: str) -> dict[str, Any] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gb": round(props.total_memory / 1024**3, 1),
            "cuda": torch.version.cuda}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
