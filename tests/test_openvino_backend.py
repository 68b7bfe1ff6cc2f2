"""OpenVINO backend: availability, compile options, encoding parity with model.encode."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.backends.onnx import export_onnx
from profiler.backends.openvino import OpenVinoEncoder, openvino_available
from profiler.errors import ProfilerError

TEXTS = [
    "the river rose",
    "a",
    "the minister said the price of water rose by a percent in the new year",
    " ".join(["the city report said the old law was new"] * 12),  # longer than 64 tokens
    "rate fell.",
    "claim, country, minister, report",
    "zq9 xx7 the",
    "new law",
    "the old city",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the row-wise cosine similarity of two embedding matrices."""
    dots = (a * b).sum(axis=1)
    return dots / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> Any:
    """The tiny random model, loaded on CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model), device="cpu")


@pytest.fixture(scope="module")
def onnx_path(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's transformer exported once for this module."""
    reason = openvino_available()
    if reason is not None:
        pytest.skip(reason)
    return export_onnx(model, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def expected(model: Any) -> np.ndarray:
    """The embeddings torch computes for TEXTS."""
    return model.encode(TEXTS, convert_to_numpy=True)


def test_missing_openvino_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert openvino_available() == "openvino is not installed: pip install openvino"


def test_broken_openvino_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def import_module(name: str, package: str | None = None) -> types.ModuleType:
        if name == "openvino":
            raise ImportError("libopenvino.so: cannot open shared object file\ndetails")
        return types.ModuleType(name)
    monkeypatch.setattr(importlib, "import_module", import_module)
    assert openvino_available() == (
        "openvino cannot be imported: libopenvino.so: cannot open shared object file")


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_f32_matches_model_encode(
        model: Any, onnx_path: Path, expected: np.ndarray, hint: str, batch_size: int) -> None:
    encoder = OpenVinoEncoder(model, onnx_path, precision="f32", hint=hint, threads=1)
    actual = encoder.encode(TEXTS, batch_size=batch_size)
    assert actual.shape == expected.shape and actual.dtype == np.float32
    assert cosines(actual, expected).min() > 1 - 1e-4
    assert encoder.effective_precision == "f32"


def test_throughput_runs_parallel_requests(model: Any, onnx_path: Path) -> None:
    encoder = OpenVinoEncoder(model, onnx_path, hint="THROUGHPUT", threads=2)
    assert encoder.queue is not None and encoder.jobs == len(encoder.queue) >= 1
    print(encoder.graph)
    requests = f"{encoder.jobs} infer request" + ("s" if encoder.jobs > 1 else "")
    assert encoder.graph.endswith(f"precision hint f32, THROUGHPUT, {requests}")


def test_latency_describes_one_request(model: Any, onnx_path: Path) -> None:
    import openvino as ov

    encoder = OpenVinoEncoder(model, onnx_path)
    version = ov.__version__.split("-")[0]
    assert encoder.graph == (f"torch.onnx.export (opset 17) → OpenVINO {version}, "
                             "precision hint f32, LATENCY, 1 infer request")
    assert encoder.queue is None and encoder.jobs == 1


def test_bf16_is_close(model: Any, onnx_path: Path, expected: np.ndarray) -> None:
    encoder = OpenVinoEncoder(model, onnx_path, precision="bf16", hint="THROUGHPUT")
    print(encoder.graph)
    assert encoder.effective_precision in ("bf16", "f32")
    runs = "" if encoder.effective_precision == "bf16" else " (runs f32)"
    assert f"precision hint bf16{runs}, THROUGHPUT" in encoder.graph
    similarity = cosines(encoder.encode(TEXTS, batch_size=4), expected)
    print(f"bf16 cosine vs torch: mean {similarity.mean():.5f} min {similarity.min():.5f}")
    assert similarity.mean() > 0.99


def test_encode_nothing(model: Any, onnx_path: Path) -> None:
    assert OpenVinoEncoder(model, onnx_path).encode([], batch_size=4).shape == (0, 32)


@pytest.mark.parametrize(("option", "value"), [("precision", "f16"), ("hint", "FAST")])
def test_bad_option(model: Any, onnx_path: Path, option: str, value: str) -> None:
    with pytest.raises(ProfilerError, match=f"OpenVINO {option} must be one of"):
        OpenVinoEncoder(model, onnx_path, **{option: value})  # type: ignore[arg-type]


def test_missing_graph(model: Any, onnx_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match=r"^ONNX model .*none\.onnx does not exist$"):
        OpenVinoEncoder(model, tmp_path / "none.onnx")


SIGNAL_AFTER_TWO_CORES = """
import gc, os, signal, sys
from pathlib import Path
from profiler.backends.openvino import _compile
first = _compile(Path(sys.argv[1]), "f32", "LATENCY", None)
second = _compile(Path(sys.argv[1]), "f32", "LATENCY", None)
del first; gc.collect(); del second; gc.collect()  # destroyed in the order they were made
signal.signal(signal.SIGUSR1, lambda *_: print("handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the plugin swaps stacks on Linux")
def test_a_signal_after_two_compiled_models_is_handled(onnx_path: Path) -> None:
    """Two OpenVINO cores destroyed in creation order left the main thread's alternate signal
    stack unmapped, so the next handled signal (Scalene's, Ctrl-C's) ended in SIGSEGV."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_TWO_CORES, str(onnx_path)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "handled"), done.stderr[-2000:]


def test_compiling_leaves_the_threads_signal_stack_as_it_was(model: Any, onnx_path: Path) -> None:
    from profiler.backends import signal_stack

    before = signal_stack.current()
    first = OpenVinoEncoder(model, onnx_path)
    second = OpenVinoEncoder(model, onnx_path, hint="THROUGHPUT")
    del first, second
    assert signal_stack.current() == before
