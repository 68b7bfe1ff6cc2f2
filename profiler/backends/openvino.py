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

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.backends.onnx import (
    ExportedEncoder,
    _import_problem,
    exporter_problem,
    graph_origin,
)
from profiler.errors import ProfilerError, first_line

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

INSTALL_HINT = "pip install openvino"
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


class OpenVinoEncoder(ExportedEncoder):
    """Encode texts like `model.encode`, with the transformer compiled by OpenVINO for the CPU."""

    def __init__(self, model: SentenceTransformer, onnx_path: Path, precision: str = "f32",
                 hint: str = "LATENCY", threads: int | None = None) -> None:
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
        self.graph = f"{graph_origin(onnx_path)} → {self._describe()}"

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
    """Read the ONNX graph with dynamic batch and sequence axes and compile it for the CPU."""
    without_telemetry()
    import openvino as ov

    if not onnx_path.is_file():
        raise ProfilerError(f"ONNX model {onnx_path} does not exist")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    try:
        graph = core.read_model(str(onnx_path))
        graph.reshape({port.get_any_name(): ov.PartialShape([-1, -1]) for port in graph.inputs})
        return core.compile_model(graph, "CPU", config)
    except Exception as error:
        problem = first_line(error)
        raise ProfilerError(f"OpenVINO could not compile {onnx_path}: {problem}") from error
