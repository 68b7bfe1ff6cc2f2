"""Measure one batch size's memory in a fresh process: `python -m profiler.memory_probe`.

Reads a JSON request on stdin ({"model_path", "device", "batch_size", "texts"}) and prints
one JSON line: RSS at start, after imports, after the model loads, and the peak while encoding.
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

import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


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
    with PeakRss(hz=200) as sampler:
        model.encode(texts, batch_size=size, show_progress_bar=False, convert_to_numpy=True)
    return {"batch_size": size, "texts": len(texts), "rss_start_mb": START_MB,
            "rss_before_load_mb": imported, "rss_after_load_mb": loaded,
            "peak_rss_mb": sampler.peak_mb, "peak_increase_mb": sampler.peak_mb - loaded,
            "ru_maxrss_mb": max_rss_mb(), "samples": sampler.samples,
            "sample_rate_hz": sampler.rate_hz, "encode_s": sampler.seconds,
            "cuda_memory_mb": cuda_peaks_mb(request["device"])}


if __name__ == "__main__":
    import transformers

    transformers.logging.set_verbosity_error()
    print(json.dumps(probe(json.loads(sys.stdin.read()))))
