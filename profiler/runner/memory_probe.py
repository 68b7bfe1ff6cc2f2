"""Measure one batch size's memory in a fresh process: `python -m profiler.runner.memory_probe`.

The process imports the model stack first and prints `ready` when it has: the memory study
starts its probes while its own process starts, and sends each its request when it is its turn.
Then it reads a JSON request on stdin ({"model_path", "device", "batch_size", "texts", and
optionally "limit_mb"}) and prints one JSON line: RSS at start, after imports, after the model
loads, and the peak while encoding. With `limit_mb`, the process may take that much address
space beyond the loaded model; an encode that needs more prints {"batch_size", "out_of_memory":
reason}.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from profiler.measure.memory import (
    PeakRss,
    cuda_peaks_mb,
    cuda_reset_peak,
    max_rss_mb,
    rss_mb,
)

START_MB = rss_mb()
READY = "ready"

import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from profiler.errors import first_line  # noqa: E402


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """Load the model and encode the texts once at the batch size, recording RSS at each step."""
    import torch  # noqa: F401 (its import is part of what the process costs)
    from sentence_transformers import SentenceTransformer

    imported = rss_mb()
    model = SentenceTransformer(request["model_path"], device=request["device"],
                                trust_remote_code=request.get("trust_remote_code", False))
    loaded = rss_mb()
    size, texts = request["batch_size"], request["texts"]
    cuda_reset_peak(request["device"])
    if request.get("limit_mb") is not None:  # threads and their arenas exist before the cap
        model.encode(texts[:1], batch_size=1, show_progress_bar=False)
        limit_address_space(request["limit_mb"])
    try:
        with PeakRss(hz=200) as sampler:
            model.encode(texts, batch_size=size, show_progress_bar=False, convert_to_numpy=True)
    except (MemoryError, RuntimeError) as exc:  # torch's CPU and CUDA allocators raise these
        if not isinstance(exc, MemoryError) and not is_out_of_memory(exc):
            raise
        return {"batch_size": size, "out_of_memory": first_line(exc, 200)}
    return {"batch_size": size, "texts": len(texts), "rss_start_mb": START_MB,
            "rss_before_load_mb": imported, "rss_after_load_mb": loaded,
            "peak_rss_mb": sampler.peak_mb, "peak_increase_mb": sampler.peak_mb - loaded,
            "ru_maxrss_mb": max_rss_mb(), "samples": sampler.samples,
            "sample_rate_hz": sampler.rate_hz, "encode_s": sampler.seconds,
            "cuda_memory_mb": cuda_peaks_mb(request["device"])}


def limit_address_space(limit_mb: float) -> None:
    """Let this process map at most `limit_mb` more than it has now (RLIMIT_AS, Linux)."""
    import resource

    with open("/proc/self/statm", encoding="ascii") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    cap = mapped + int(limit_mb * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an allocator's error says it ran out of memory (CPU or CUDA)."""
    message = str(exc).lower()
    return "out of memory" in message or "can't allocate memory" in message \
        or type(exc).__name__ == "OutOfMemoryError"


def main() -> None:
    """Import the model stack, say so, then probe the request that arrives on stdin."""
    from profiler.runner.lifetime import die_with_parent

    die_with_parent()  # a probe never outlives the study that started it
    import sentence_transformers  # noqa: F401 (the imports a fresh process pays, before READY)
    import transformers

    transformers.logging.set_verbosity_error()
    print(READY, flush=True)
    print(json.dumps(probe(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
