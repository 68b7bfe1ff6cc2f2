"""ONNX Runtime backend: export, int8 quantization, encoding parity with model.encode."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.backends import onnx as onnx_backend
from profiler.backends.onnx import (
    OnnxEncoder,
    choose_quant_config,
    export_onnx,
    onnx_available,
    optimize_onnx,
    quantize_int8,
)
from profiler.errors import ProfilerError

TEXTS = [
    "the river rose",
    "a",
    "the minister said the price of water rose by a percent in the new year",
    " ".join(["the city report said the old law was new"] * 12),  # longer than 64 tokens
    "rate fell.",
    "claim, country, minister, report",
    "zq9 xx7 the",
]
SKIP_REASON = "onnxruntime is not installed: pip install onnxruntime onnx"


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
    pytest.importorskip("onnxruntime", reason=SKIP_REASON)
    return export_onnx(model, tmp_path_factory.mktemp("onnx"))


@pytest.mark.parametrize(("flags", "name", "weights"), [
    (["fpu", "sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni"], "avx512_vnni", "QInt8"),
    (["avx2", "avx512f", "avx512bw", "avx512vnni"], "avx512_vnni", "QInt8"),  # py-cpuinfo spelling
    (["sse4_2", "avx2", "avx512f", "avx512bw"], "avx512", "QInt8"),
    (["sse4_2", "avx", "avx2", "fma"], "avx2", "QUInt8"),
    (["avx2", "avx_vnni"], "avx2", "QUInt8"),
    (["fp", "asimd", "evtstrm", "aes", "crc32"], "arm64", "QInt8"),
    (["arm64"], "arm64", "QInt8"),
    (["sse4_2"], "avx2", "QUInt8"),
    ([], "avx2", "QUInt8"),
])
def test_quant_config_follows_cpu_flags(flags: list[str], name: str, weights: str) -> None:
    config = choose_quant_config(flags)
    assert (config.name, config.weight_type, config.per_channel, config.reduce_range) == (
        name, weights, True, False)


def fake_import(missing: str, error: ImportError | None = None) -> Any:
    """Return an import_module that fails for `missing` and succeeds for anything else."""
    def import_module(name: str, package: str | None = None) -> types.ModuleType:
        if name == missing:
            raise error or ModuleNotFoundError(f"No module named {name!r}", name=name)
        return types.ModuleType(name)
    return import_module


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_onnx_available_names_the_missing_package(
        missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib, "import_module", fake_import(missing))
    assert onnx_available() == f"{missing} is not installed: pip install onnxruntime onnx"


def test_onnx_available_reports_a_broken_import(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = ImportError("libonnxruntime.so: cannot open shared object file")
    monkeypatch.setattr(importlib, "import_module", fake_import("onnxruntime", broken))
    assert onnx_available() == (
        "onnxruntime cannot be imported: libonnxruntime.so: cannot open shared object file")


def test_onnx_available_needs_onnxscript_without_legacy_exporter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib, "import_module", fake_import("onnxscript"))
    monkeypatch.setattr(onnx_backend, "_exporter", lambda: "dynamo")
    reason = onnx_available()
    assert reason is not None and reason.startswith("onnxscript is not installed: pip install")


def test_a_broken_import_is_reported_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = ImportError("undefined symbol: foo\nmore details")
    monkeypatch.setattr(importlib, "import_module", fake_import("onnx", broken))
    assert onnx_available() == "onnx cannot be imported: undefined symbol: foo"


def test_onnx_available_blocked_in_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert onnx_available() == "onnxruntime is not installed: pip install onnxruntime onnx"


def test_export_failure_is_a_profiler_error(
        model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise RuntimeError("unsupported operator\ntraceback details")
    monkeypatch.setattr(onnx_backend, "_export", fail)
    with pytest.raises(ProfilerError, match=r"^ONNX export failed: unsupported operator$"):
        export_onnx(model, tmp_path)


def test_export_needs_a_transformer_module(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="needs a Transformer"):
        export_onnx([object()], tmp_path)  # type: ignore[arg-type]


def test_export_is_deterministic_and_keeps_eval_mode(
        model: Any, onnx_path: Path, tmp_path: Path) -> None:
    assert onnx_path.name == "model.onnx"
    assert export_onnx(model, tmp_path).read_bytes() == onnx_path.read_bytes()
    assert not model[0].auto_model.training


def test_onnx_inputs_and_dynamic_axes(onnx_path: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [node.name for node in session.get_inputs()] == [
        "input_ids", "attention_mask", "token_type_ids"]
    assert session.get_outputs()[0].shape == ["batch", "sequence", 32]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_fp32_matches_model_encode(model: Any, onnx_path: Path, batch_size: int) -> None:
    expected = model.encode(TEXTS, convert_to_numpy=True)
    actual = OnnxEncoder(model, onnx_path).encode(TEXTS, batch_size=batch_size)
    assert actual.shape == expected.shape and actual.dtype == np.float32
    assert np.abs(actual - expected).max() < 1e-4
    assert cosines(actual, expected).min() > 0.99999


def test_encode_nothing(model: Any, onnx_path: Path) -> None:
    assert OnnxEncoder(model, onnx_path, threads=1).encode([], batch_size=4).shape == (0, 32)


def test_int8_is_smaller_and_close(model: Any, onnx_path: Path, tmp_path: Path) -> None:
    quantized = quantize_int8(onnx_path, tmp_path / "int8" / "model_int8.onnx",
                              ["avx2", "avx512f", "avx512_vnni"])
    assert quantized.config.name == "avx512_vnni" and quantized.path.is_file()
    assert quantized.path.stat().st_size < onnx_path.stat().st_size
    actual = OnnxEncoder(model, quantized.path, threads=1).encode(TEXTS, batch_size=4)
    similarity = cosines(actual, model.encode(TEXTS, convert_to_numpy=True))
    print(f"int8 cosine vs torch: mean {similarity.mean():.5f} min {similarity.min():.5f}")
    assert similarity.min() > 0.9


def test_quantize_missing_file(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason=SKIP_REASON)
    with pytest.raises(ProfilerError, match="does not exist"):
        quantize_int8(tmp_path / "none.onnx", tmp_path / "out.onnx", ["avx2"])


def test_dynamo_exporter_matches(
        model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime", reason=SKIP_REASON)
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    monkeypatch.setattr(onnx_backend, "_exporter", lambda: "dynamo")
    actual = OnnxEncoder(model, export_onnx(model, tmp_path)).encode(TEXTS, batch_size=3)
    assert cosines(actual, model.encode(TEXTS, convert_to_numpy=True)).min() > 0.99999


@pytest.fixture(scope="module")
def eager_onnx_path(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with eager attention, whose graph ONNX Runtime's fusion matches."""
    pytest.importorskip("onnxruntime", reason=SKIP_REASON)
    return export_onnx(model, tmp_path_factory.mktemp("eager"), attention="eager")


def test_eager_export_restores_attention(model: Any, eager_onnx_path: Path) -> None:
    assert model[0].auto_model.config._attn_implementation == "sdpa"
    actual = OnnxEncoder(model, eager_onnx_path).encode(TEXTS, batch_size=3)
    assert cosines(actual, model.encode(TEXTS, convert_to_numpy=True)).min() > 0.99999


def test_o2_fusions_match_model_encode(model: Any, eager_onnx_path: Path, tmp_path: Path) -> None:
    fused = optimize_onnx(eager_onnx_path, tmp_path / "o2" / "model_o2.onnx", model)
    print(fused.graph)
    assert fused.path.is_file()
    assert fused.fused == {"Attention": 2, "BiasGelu": 2, "LayerNormalization": 1,
                           "SkipLayerNormalization": 4}  # 2 layers; embeddings keep LayerNorm
    assert fused.graph == (
        "torch.onnx.export (opset 17) + onnxruntime.transformers.optimizer, O2 fusions: "
        "2 Attention, 2 BiasGelu, 1 LayerNormalization, 4 SkipLayerNormalization")
    expected = model.encode(TEXTS, convert_to_numpy=True)
    for batch_size in (1, 3, 32):  # padding differs per batch; the mask index must hold
        actual = OnnxEncoder(model, fused.path, threads=1).encode(TEXTS, batch_size=batch_size)
        assert actual.shape == expected.shape and actual.dtype == np.float32
        assert cosines(actual, expected).min() > 1 - 1e-4


def test_fusing_the_sdpa_export_still_matches(
        model: Any, onnx_path: Path, tmp_path: Path) -> None:
    fused = optimize_onnx(onnx_path, tmp_path / "model_o2.onnx", model)
    assert "SkipLayerNormalization" in fused.fused and "O2 fusions: " in fused.graph
    actual = OnnxEncoder(model, fused.path).encode(TEXTS, batch_size=4)
    assert cosines(actual, model.encode(TEXTS, convert_to_numpy=True)).min() > 1 - 1e-4


def test_fusion_failure_is_one_line(
        model: Any, onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.transformers import optimizer

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Incomplete symbolic shape inference\ntraceback details")
    monkeypatch.setattr(optimizer, "optimize_model", fail)
    with pytest.raises(ProfilerError, match=r"^ONNX fusion failed: Incomplete symbolic shape "
                                            r"inference$"):
        optimize_onnx(onnx_path, tmp_path / "model_o2.onnx", model)


def test_fusion_missing_file(model: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason=SKIP_REASON)
    with pytest.raises(ProfilerError, match="does not exist"):
        optimize_onnx(tmp_path / "none.onnx", tmp_path / "out.onnx", model)
