"""Run a sentence-transformers model's transformer with OpenVINO on the CPU, from its ONNX export.

sentence-transformers' own ``backend="openvino"`` needs optimum-intel, whose releases pin torch and
transformers; the ``openvino`` package alone reads the graph that ``export_onnx`` writes. As with
``OnnxEncoder``, pooling and normalization still run in torch on the hidden states.

The compiled model is configured with three CPU properties: INFERENCE_PRECISION_HINT (``f32`` or
``bf16``; without avx512_bf16 or AMX the CPU plugin runs f32 whatever the hint, which
``effective_precision`` records), PERFORMANCE_HINT (``LATENCY``: one infer request run batch by
batch; ``THROUGHPUT``: the plugin's OPTIMAL_NUMBER_OF_INFER_REQUESTS requests run batches in
parallel on CPU streams) and INFERENCE_NUM_THREADS.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.backends.onnx import (
    ExportedEncoder,
    StaticModel,
    _import_problem,
    calibration_feeds,
    exporter_problem,
    graph_origin,
)
from profiler.backends.signal_stack import kept
from profiler.errors import ProfilerError, first_line

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

INSTALL_HINT = "pip install openvino"
NNCF_HINT = "pip install nncf (or this package's [static] extra)"
PRECISIONS = ("f32", "bf16")
HINTS = ("LATENCY", "THROUGHPUT")


def openvino_available() -> str | None:
    """Return None if the OpenVINO backend can run, else the reason as one line."""
    without_telemetry()
    return _import_problem("openvino", INSTALL_HINT) or exporter_problem()


def without_telemetry() -> None:
    """Make `import openvino` use its own telemetry stub instead of openvino-telemetry.

    The real package forks a process to send usage data over the network; with no network the
    child can outlive the study and hold its output pipe open, so the build never ends.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def nncf_available() -> str | None:
    """Return None if NNCF can quantize for OpenVINO here, else the reason as one line."""
    return openvino_available() or _import_problem("nncf", NNCF_HINT)


def quantize_nncf(onnx_path: Path, out_dir: Path, model: SentenceTransformer,
                  calibration: list[str]) -> StaticModel:
    """Write an OpenVINO IR with NNCF's post-training static int8, calibrated on `calibration`.

    `nncf.quantize` with the transformer preset (SmoothQuant, then fast bias correction), over
    every calibration text: what sentence-transformers' `export_static_quantized_openvino_model`
    runs through optimum-intel, with the user's corpus instead of GLUE's sst2.
    """
    without_telemetry()
    import nncf
    import openvino as ov

    if not onnx_path.is_file():
        raise ProfilerError(f"ONNX model {onnx_path} does not exist")
    if not calibration:
        raise ProfilerError("static quantization needs calibration texts")
    graph = ov.Core().read_model(str(onnx_path))
    names = [port.get_any_name() for port in graph.inputs]
    dataset = nncf.Dataset(calibration_feeds(model, calibration, names))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model_int8.xml"
    try:  # NNCF compiles its statistics models on cores of its own: see signal_stack
        with kept(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            quantized = nncf.quantize(graph, dataset, model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(calibration))
        ov.save_model(quantized, str(path))
    except Exception as error:
        raise ProfilerError(f"NNCF quantization failed: {first_line(error)}") from error
    ops = Counter(op.get_type_name() for op in quantized.get_ops())
    layers, fake = ops["MatMul"] + ops["FullyConnected"], ops["FakeQuantize"]
    description = (f"{graph_origin(onnx_path)} + nncf {nncf.__version__} quantize (static int8, "
                   f"transformer preset, {len(calibration)} corpus texts apart from the quality "
                   f"texts): {fake} FakeQuantize around {layers} MatMuls")
    return StaticModel(path, description, fake, 0)


class OpenVinoEncoder(ExportedEncoder):
    """Encode texts like `model.encode`, with the transformer compiled by OpenVINO for the CPU."""

    def __init__(self, model: SentenceTransformer, onnx_path: Path, precision: str = "f32",
                 hint: str = "LATENCY", threads: int | None = None,
                 origin: str | None = None) -> None:
        import openvino as ov

        _check_choice("precision", precision, PRECISIONS)
        _check_choice("hint", hint, HINTS)
        self.compiled = _compile(onnx_path, precision, hint, threads)
        super().__init__(model, [port.get_any_name() for port in self.compiled.inputs])
        self.precision, self.hint = precision, hint
        self.effective_precision = str(
            self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        self.request = self.compiled.create_infer_request()
        self.queue: Any = None  # an AsyncInferQueue with the THROUGHPUT hint
        if hint == "THROUGHPUT":
            self.jobs = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queue = ov.AsyncInferQueue(self.compiled, self.jobs)
        self.graph = f"{origin or graph_origin(onnx_path)} → {self._describe()}"

    def _describe(self) -> str:
        """Say what was compiled, e.g. "OpenVINO 2026.4.1, precision hint bf16 (runs f32), ..."."""
        import openvino as ov

        effective = self.effective_precision
        runs = "" if effective == self.precision else f" (runs {effective})"
        requests = f"{self.jobs} infer request" + ("s" if self.jobs > 1 else "")
        return (f"OpenVINO {ov.__version__.split('-')[0]}, precision hint {self.precision}{runs}, "
                f"{self.hint}, {requests}")

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Return the last hidden state that OpenVINO computes for one batch."""
        return self.request.infer(feed)[0]

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Return the last hidden state of each batch, run as parallel requests with THROUGHPUT."""
        if self.queue is None:
            return super().run_many(feeds)
        results: list[Any] = [None] * len(feeds)

        def keep(request: Any, index: int) -> None:
            results[index] = request.get_output_tensor(0).data.copy()  # the request is reused

        self.queue.set_callback(keep)
        for index, feed in enumerate(feeds):
            self.queue.start_async(feed, index)  # waits while every request is busy
        self.queue.wait_all()
        return results


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ProfilerError unless `value` is one of `choices`."""
    if value not in choices:
        raise ProfilerError(f"OpenVINO {name} must be one of {', '.join(choices)}, not {value!r}")


def _compile(onnx_path: Path, precision: str, hint: str, threads: int | None) -> Any:
    """Read the graph (ONNX or OpenVINO IR) with dynamic batch and sequence axes; compile it."""
    without_telemetry()
    import openvino as ov

    if not onnx_path.is_file():
        kind = "ONNX model" if onnx_path.suffix == ".onnx" else "OpenVINO model"
        raise ProfilerError(f"{kind} {onnx_path} does not exist")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    try:
        graph = core.read_model(str(onnx_path))
        graph.reshape({port.get_any_name(): ov.PartialShape([-1, -1]) for port in graph.inputs})
        with kept():  # the core's CPU plugin swaps this thread's signal stack: see signal_stack
            return core.compile_model(graph, "CPU", config)
    except Exception as error:
        problem = first_line(error)
        raise ProfilerError(f"OpenVINO could not compile {onnx_path}: {problem}") from error
