"""Time a cold start in a fresh process: `python -m profiler.runner.cold_start`.

Reads {"model_path", "device", "text", "trust_remote_code"} as JSON on stdin and prints one
JSON line: seconds to import torch and sentence-transformers, to load the model, and the
milliseconds of the first and second single-text `encode` calls (the second is warm).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
BEGAN = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


def cold_start(request: dict[str, Any]) -> dict[str, Any]:
    """Import, load, then encode one text twice, timing each step."""
    from sentence_transformers import SentenceTransformer

    from profiler.measure.timing import timed

    imported = time.perf_counter()
    model = SentenceTransformer(request["model_path"], device=request["device"],
                                trust_remote_code=request.get("trust_remote_code", False))
    loaded = time.perf_counter()
    device, text = request["device"], [request["text"]]
    first = timed(lambda: model.encode(text, show_progress_bar=False), device)
    second = timed(lambda: model.encode(text, show_progress_bar=False), device)
    return {"import_s": imported - BEGAN, "load_s": loaded - imported,
            "first_encode_ms": 1000 * first, "second_encode_ms": 1000 * second,
            "total_s": loaded - BEGAN + first}


if __name__ == "__main__":
    import transformers

    from profiler.runner.lifetime import die_with_parent

    die_with_parent()  # a probe never outlives the study that started it
    transformers.logging.set_verbosity_error()
    print(json.dumps(cold_start(json.loads(sys.stdin.read()))))
