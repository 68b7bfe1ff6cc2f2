"""Run a sentence-transformers model on ONNX Runtime: export, int8 dynamic quantization, encode.

sentence-transformers' own ``backend="onnx"`` needs optimum-onnx, which pins transformers < 4.58,
so the transformer module is exported here with torch's exporter and run with onnxruntime; the
model's remaining modules (pooling, dense, normalize) still run in torch on the hidden states.

``optimize_onnx`` runs the transformer fusions of optimum's ``AutoOptimizationConfig.O2()`` on CPU:
``optimize_model(path, "bert", heads, hidden, opt_level=2, use_gpu=False)`` with the default
``FusionOptions("bert")`` except EmbedLayerNormalization, which O2 leaves out because it breaks
quantization. ONNX Runtime's Attention pattern does not match the SDPA graph that transformers 5
exports, so export with ``attention="eager"`` before fusing to get fused Attention nodes.

Int8 configurations mirror optimum's ``AutoQuantizationConfig.<name>(is_static=False)``, which is
what sentence-transformers' ``export_dynamic_quantized_onnx_model`` uses. Dynamic quantization
always has uint8 activations (asymmetric); weights are symmetric and per-channel:

=============  ===========  ======  ===========  ============  ===========================
config         activations  weights  per_channel  reduce_range  chosen when the CPU has
=============  ===========  ======  ===========  ============  ===========================
avx512_vnni    QUInt8       QInt8   yes          no            avx512_vnni
avx512         QUInt8       QInt8   yes          no            avx512f (no VNNI)
avx2           QUInt8       QUInt8  yes          no            avx2, or anything unknown
arm64          QUInt8       QInt8   yes          no            asimd / neon / arm64 / aarch64
=============  ===========  ======  ===========  ============  ===========================

avx2 keeps uint8 weights because u8*s8 on VPMADDUBSW can saturate without VNNI; that is also the
safe fallback. AVX-VNNI without AVX-512 (``avx_vnni``) gets avx2, as optimum has no config for it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import platform
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import ProfilerError, first_line
from profiler.model import embedding_dim

if TYPE_CHECKING:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

ONNX_FILE = "model.onnx"
OPSET = 17
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
INSTALL_HINT = "pip install onnxruntime onnx"
# Two lengths, so the traced graph keeps the padding-mask path instead of dropping it.
EXPORT_SAMPLE = ["an example sentence to trace the encoder with", "short"]
LEGACY_EXPORTER = "torch.onnx._internal.torchscript_exporter"


@dataclass(frozen=True)
class QuantConfig:
    """One of optimum's dynamic int8 configurations."""

    name: str  # arm64 | avx2 | avx512 | avx512_vnni
    weight_type: str  # onnxruntime QuantType member: QInt8 | QUInt8
    per_channel: bool = True
    reduce_range: bool = False


QUANT_CONFIGS = {
    "avx512_vnni": QuantConfig("avx512_vnni", "QInt8"),
    "avx512": QuantConfig("avx512", "QInt8"),
    "avx2": QuantConfig("avx2", "QUInt8"),
    "arm64": QuantConfig("arm64", "QInt8"),
}


@dataclass(frozen=True)
class FusedModel:
    """An ONNX file with ONNX Runtime's transformer fusions, and how it was built."""

    path: Path
    graph: str  # e.g. "torch.onnx.export (opset 17) + onnxruntime.transformers.optimizer, ..."
    fused: dict[str, int]  # fused operator type -> nodes of that type in the graph


@dataclass(frozen=True)
class StaticModel:
    """A statically quantized graph (scales calibrated on corpus texts) and how it was built."""

    path: Path
    graph: str  # how it was exported, quantized and calibrated, on how many texts
    quantized: int  # quantized nodes: MatMuls run in int8 (ONNX Runtime), FakeQuantize (NNCF)
    kept: int  # weight layers left in fp32 (their input's range is too wide for one scale)


@dataclass(frozen=True)
class QuantizedModel:
    """A quantized ONNX file and the configuration that made it."""

    path: Path
    config: QuantConfig


def onnx_available() -> str | None:
    """Return None if ONNX export and inference can run, else the reason as one line."""
    for module in ("onnxruntime", "onnx"):
        problem = _import_problem(module, INSTALL_HINT)
        if problem is not None:
            return problem
    return exporter_problem()


def exporter_problem() -> str | None:
    """Return None if torch can export to ONNX here, else the reason as one line."""
    if _exporter() == "dynamo":
        return _import_problem("onnxscript", "pip install onnxscript (no legacy exporter in torch)")
    return None


def _import_problem(module: str, hint: str) -> str | None:
    """Return why `module` cannot be imported, or None."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return f"{module} is not installed: {hint}"
    except ImportError as error:
        return f"{module} cannot be imported: {first_line(error)}"
    return None


def _exporter() -> str:
    """Pick torch's TorchScript exporter (fast, no onnxscript) while torch still ships it."""
    return "torchscript" if importlib.util.find_spec(LEGACY_EXPORTER) is not None else "dynamo"


def export_onnx(model: SentenceTransformer, out_dir: Path, attention: str | None = None) -> Path:
    """Export the transformer to `out_dir`/model.onnx; `attention` ("eager") overrides its own."""
    auto_model = _auto_model(model)
    features = _tokenize(model, EXPORT_SAMPLE)
    names = _input_names(auto_model, features)
    args = tuple(features[name].to(auto_model.device) for name in names)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_FILE
    was_training = auto_model.training
    try:
        with _attention(auto_model, attention):
            _export(_hidden_states_module(auto_model, names).eval(), args, names, path)
    except Exception as error:
        raise ProfilerError(f"ONNX export failed: {first_line(error)}") from error
    finally:  # the legacy exporter restores the wrapper's mode onto the model
        auto_model.train(was_training)
    return path


@contextlib.contextmanager
def _attention(auto_model: Any, implementation: str | None) -> Iterator[None]:
    """Switch the model's attention implementation for the block, then switch it back."""
    previous = auto_model.config._attn_implementation
    if implementation is None or implementation == previous:
        yield
        return
    auto_model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        auto_model.set_attn_implementation(previous)


def _auto_model(model: SentenceTransformer) -> Any:
    """Return the Hugging Face model inside the first module, or raise ProfilerError."""
    first = model[0]
    if not hasattr(first, "auto_model"):
        kind = type(first).__name__
        raise ProfilerError(f"ONNX export needs a Transformer as first module, not {kind}")
    return first.auto_model


def _input_names(auto_model: Any, features: dict[str, Any]) -> list[str]:
    """Return the tokenizer outputs that the model's forward takes, in a fixed order."""
    import inspect

    accepted = inspect.signature(auto_model.forward).parameters
    return [name for name in MODEL_INPUTS if name in features and name in accepted]


def _hidden_states_module(auto_model: Any, names: list[str]) -> torch.nn.Module:
    """Wrap `auto_model` so positional token tensors map to its last hidden state."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = auto_model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            output = self.model(**dict(zip(names, inputs, strict=True)), return_dict=True)
            return output.last_hidden_state

    return HiddenStates()


def _export(module: torch.nn.Module, args: tuple[Any, ...], names: list[str], path: Path) -> None:
    """Write `module` to `path` with dynamic batch and sequence axes."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's tracer and deprecation warnings
        if _exporter() == "torchscript":
            axes = {name: {0: "batch", 1: "sequence"} for name in [*names, OUTPUT_NAME]}
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                              input_names=names, output_names=[OUTPUT_NAME], dynamic_axes=axes)
        else:  # needs onnxscript; opset 18 is its lowest; the shapes nest as *inputs does
            dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=18,
                              input_names=names, output_names=[OUTPUT_NAME],
                              dynamic_shapes=(tuple(dims for _ in names),), external_data=False,
                              verbose=False)


def graph_origin(onnx_path: Path) -> str:
    """Say how an exported graph was made, e.g. "torch.onnx.export (opset 17)"."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
                 "?")
    return f"torch.onnx.export (opset {opset})"


def optimize_onnx(onnx_path: Path, out_path: Path, model: SentenceTransformer) -> FusedModel:
    """Write `onnx_path` with optimum's O2 transformer fusions (CPU, fp32) to `out_path`."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from profiler.measure.flops import model_config

    if not onnx_path.is_file():
        raise ProfilerError(f"ONNX model {onnx_path} does not exist")
    try:
        sizes = model_config(model)
    except (ValueError, AttributeError) as error:
        raise ProfilerError(f"ONNX fusion needs a BERT config: {first_line(error)}") from error
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # O2's default: the fused op breaks quantization
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        optimizer = optimize_model(str(onnx_path), "bert", sizes["num_attention_heads"],
                                   sizes["hidden_size"], optimization_options=options,
                                   opt_level=2, use_gpu=False, only_onnxruntime=False)
        optimizer.save_model_to_file(str(out_path))
    except Exception as error:
        raise ProfilerError(f"ONNX fusion failed: {first_line(error)}") from error
    fused = {op: int(n) for op, n in optimizer.get_fused_operator_statistics().items() if n}
    counts = ", ".join(f"{n} {op}" for op, n in fused.items()) or "nothing fused"
    graph = f"{graph_origin(onnx_path)} + onnxruntime.transformers.optimizer, O2 fusions: {counts}"
    return FusedModel(out_path, graph, fused)


def choose_quant_config(cpu_flags: list[str]) -> QuantConfig:
    """Pick the int8 configuration that suits a CPU with these feature flags."""
    # no /proc/cpuinfo (macOS): the machine name tells arm64 from x86
    flags = {flag.lower().replace("_", "").replace("-", "")
             for flag in cpu_flags or [platform.machine()]}
    if "avx512vnni" in flags:
        return QUANT_CONFIGS["avx512_vnni"]
    if "avx512f" in flags:
        return QUANT_CONFIGS["avx512"]
    if "avx2" in flags:
        return QUANT_CONFIGS["avx2"]
    if flags & {"asimd", "neon", "arm64", "aarch64"}:
        return QUANT_CONFIGS["arm64"]
    return QUANT_CONFIGS["avx2"]


def quantize_int8(onnx_path: Path, out_path: Path, cpu_flags: list[str]) -> QuantizedModel:
    """Write a dynamic int8 copy of `onnx_path` to `out_path`, configured for the CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not onnx_path.is_file():
        raise ProfilerError(f"ONNX model {onnx_path} does not exist")
    config = choose_quant_config(cpu_flags)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_root_logger():
            quantize_dynamic(onnx_path, out_path, per_channel=config.per_channel,
                             reduce_range=config.reduce_range,
                             weight_type=QuantType[config.weight_type],
                             extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    except Exception as error:
        raise ProfilerError(f"int8 quantization failed: {first_line(error)}") from error
    return QuantizedModel(out_path, config)


# producers of an FFN's activation (GELU ends in Mul when exported from erf): the layer after one
# sees outliers that one static scale cannot hold, so it stays fp32 (as NNCF's SmoothQuant and
# mixed-precision recipes do for the same layers)
ACTIVATION_OPS = frozenset({"Mul", "Gelu", "FastGelu", "QuickGelu", "Relu", "Tanh", "Sigmoid",
                            "Erf", "BiasGelu"})


def weight_matmuls(onnx_path: Path) -> tuple[list[str], list[str]]:
    """Split the graph's MatMuls by a weight input into (to quantize, to keep in fp32)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name for init in graph.initializer} | {
        node.output[0] for node in graph.node if node.op_type == "Constant"}
    producer = {out: node.op_type for node in graph.node for out in node.output}
    quantize: list[str] = []
    keep: list[str] = []
    for node in graph.node:
        if node.op_type != "MatMul" or not any(name in weights for name in node.input):
            continue
        activation = next((name for name in node.input if name not in weights), "")
        (keep if producer.get(activation) in ACTIVATION_OPS else quantize).append(node.name)
    return quantize, keep


def quantize_static_int8(onnx_path: Path, out_path: Path, model: SentenceTransformer,
                         calibration: list[str], cpu_flags: list[str]) -> StaticModel:
    """Write a static int8 (QDQ) copy of `onnx_path`, its scales calibrated on `calibration`.

    Activations are uint8 with MinMax ranges over the calibration texts, one text per sample at
    its own length; weights follow the CPU's dynamic configuration (per-channel; uint8 without
    VNNI or AVX-512, where int8 products can saturate). Only MatMuls with a weight are
    quantized, except those fed by an activation function.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not onnx_path.is_file():
        raise ProfilerError(f"ONNX model {onnx_path} does not exist")
    if not calibration:
        raise ProfilerError("static quantization needs calibration texts")
    config = choose_quant_config(cpu_flags)
    quantize, keep = weight_matmuls(onnx_path)
    feeds = iter(calibration_feeds(model, calibration, graph_inputs(onnx_path)))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, Any] | None:
            return next(feeds, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_root_logger():
            quantize_static(str(onnx_path), str(out_path), Reader(),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                            nodes_to_quantize=quantize, per_channel=config.per_channel,
                            reduce_range=config.reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType[config.weight_type],
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    except Exception as error:
        raise ProfilerError(f"static int8 quantization failed: {first_line(error)}") from error
    graph = (f"{graph_origin(onnx_path)} + onnxruntime quantize_static (QDQ, uint8 activations, "
             f"{config.weight_type} per-channel weights as the {config.name} configuration, "
             f"MinMax calibration on {len(calibration)} corpus texts apart from the quality "
             f"texts): {len(quantize)} MatMuls int8, {len(keep)} after an activation kept fp32")
    return StaticModel(out_path, graph, len(quantize), len(keep))


def calibration_feeds(model: SentenceTransformer, texts: list[str],
                      names: list[str]) -> list[dict[str, np.ndarray]]:
    """One feed per text at its own length, as the model tokenizes it."""
    feeds = []
    for text in texts:
        features = _tokenize(model, [text])
        feeds.append({name: features[name].numpy() for name in names})
    return feeds


def graph_inputs(onnx_path: Path) -> list[str]:
    """The names of the graph's inputs, in order."""
    import onnx

    return [entry.name for entry in onnx.load(str(onnx_path), load_external_data=False).graph.input]


def count_ops(onnx_path: Path, op_type: str) -> int:
    """How many nodes of `op_type` the graph holds."""
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(onnx_path)).graph.node)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide onnxruntime's advice to pre-process, logged on the root logger at WARNING."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class ExportedEncoder(ABC):
    """Encode texts like `model.encode`, with the transformer run outside torch by a subclass."""

    jobs = 1  # batches handed to `run_many` at once

    def __init__(self, model: SentenceTransformer, input_names: list[str]) -> None:
        self.model = model.eval()
        self.input_names = input_names
        self.output_key = str(getattr(model[0], "module_output_name", "token_embeddings"))

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Return the transformer's last hidden state for one batch of token arrays."""

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Return the last hidden state of each batch, in order."""
        return [self.run(feed) for feed in feeds]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Return one float32 embedding row per text, in the order given."""
        import numpy as np

        if not texts:
            return np.zeros((0, embedding_dim(self.model)), np.float32)
        order = np.argsort([-len(text) for text in texts])  # as model.encode: less padding
        ordered = [texts[i] for i in order]
        batches = [ordered[start:start + batch_size] for start in range(0, len(texts), batch_size)]
        sorted_embeddings = np.concatenate([
            rows for start in range(0, len(batches), self.jobs)
            for rows in self._encode_batches(batches[start:start + self.jobs])])
        embeddings = np.empty_like(sorted_embeddings)
        embeddings[order] = sorted_embeddings
        return embeddings

    def _encode_batches(self, batches: list[list[str]]) -> list[np.ndarray]:
        """Tokenize, run the transformer on each batch, then the model's other modules in torch."""
        features = [_tokenize(self.model, texts) for texts in batches]
        hidden = self.run_many([{name: batch[name].numpy() for name in self.input_names}
                                for batch in features])
        return [self._pool(batch, states) for batch, states in zip(features, hidden, strict=True)]

    def _pool(self, features: dict[str, Any], hidden: np.ndarray) -> np.ndarray:
        """Run the model's modules after the transformer on its hidden states."""
        import torch

        features[self.output_key] = torch.from_numpy(hidden)
        with torch.inference_mode():
            for module in list(self.model)[1:]:
                features = module(features)
        embedding = features["sentence_embedding"]
        if self.model.truncate_dim is not None:
            embedding = embedding[:, : self.model.truncate_dim]
        return embedding.float().cpu().numpy()


class OnnxEncoder(ExportedEncoder):
    """Encode texts like `model.encode`, with the transformer run by ONNX Runtime."""

    def __init__(self, model: SentenceTransformer, onnx_path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # idle threads that spin after a run steal the cores tokenization (and, in interleaved
        # rounds, the next contender) needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        super().__init__(model, [node.name for node in self.session.get_inputs()])

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Return the last hidden state that ONNX Runtime computes for one batch."""
        return self.session.run([OUTPUT_NAME], feed)[0]


def _tokenize(model: SentenceTransformer, texts: list[str]) -> dict[str, Any]:
    """Tokenize as `model.encode` does (`preprocess` since sentence-transformers 6)."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return preprocess(texts)
