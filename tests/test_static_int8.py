"""Static int8 calibrated on the corpus (ONNX Runtime QDQ, OpenVINO + NNCF); parallel instances."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from profiler.backends import variants as variants_module
from profiler.backends.instances import InstancePool, layouts
from profiler.backends.onnx import (
    OnnxEncoder,
    count_ops,
    export_onnx,
    quantize_static_int8,
    weight_matmuls,
)
from profiler.backends.openvino import OpenVinoEncoder, nncf_available, quantize_nncf
from profiler.backends.variants import Skip, calibration_texts, variants
from profiler.config import Settings, Timing
from profiler.errors import ProfilerError

CORPUS = [t for t in (Path(__file__).parents[1] / "data" / "corpus.txt").read_text().splitlines()
          if t.strip()]
QUALITY, CALIBRATION = CORPUS[:40], CORPUS[40:120]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model), device="cpu")


@pytest.fixture(scope="module")
def onnx_path(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def expected(model: Any) -> np.ndarray:
    return model.encode(QUALITY, convert_to_numpy=True)


def test_weight_matmuls_keep_the_layer_after_an_activation(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w1")
    weight2 = numpy_helper.from_array(np.ones((4, 4), np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
             helper.make_node("Relu", ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["d"], name="down"),
             helper.make_node("MatMul", ["d", "d"], ["y"], name="scores")]  # no weight
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [weight, weight2])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert weight_matmuls(path) == (["up"], ["down"])


def test_onnx_static_int8_is_a_qdq_graph_close_to_fp32(
        model: Any, onnx_path: Path, expected: np.ndarray, tmp_path: Path) -> None:
    quantize, keep = weight_matmuls(onnx_path)
    layers = model[0].auto_model.config.num_hidden_layers
    assert len(keep) == layers  # each layer's FFN down-projection follows the GELU
    static = quantize_static_int8(onnx_path, tmp_path / "static.onnx", model, CALIBRATION,
                                  ["avx512_vnni"])
    assert (static.quantized, static.kept) == (len(quantize), len(keep))
    assert count_ops(static.path, "QuantizeLinear") >= len(quantize)
    assert count_ops(static.path, "DequantizeLinear") >= 2 * len(quantize)
    assert count_ops(onnx_path, "QuantizeLinear") == 0
    assert f"on {len(CALIBRATION)} corpus texts" in static.graph
    actual = OnnxEncoder(model, static.path, threads=1).encode(QUALITY, batch_size=8)
    similarity = cosines(expected, actual)
    assert similarity.mean() > 0.95
    assert not np.allclose(actual, expected, atol=1e-6)  # it really is quantized


def test_static_quantization_refuses_an_empty_calibration(
        model: Any, onnx_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="needs calibration texts"):
        quantize_static_int8(onnx_path, tmp_path / "s.onnx", model, [], ["avx2"])
    with pytest.raises(ProfilerError, match="needs calibration texts"):
        quantize_nncf(onnx_path, tmp_path, model, [])


def test_nncf_static_int8_is_an_int8_ir_close_to_fp32(
        model: Any, onnx_path: Path, expected: np.ndarray, tmp_path: Path) -> None:
    if (reason := nncf_available()) is not None:
        pytest.skip(reason)
    static = quantize_nncf(onnx_path, tmp_path, model, CALIBRATION)
    assert static.path.suffix == ".xml" and static.quantized > 0
    assert "FakeQuantize" in static.graph and f"{len(CALIBRATION)} corpus texts" in static.graph
    encoder = OpenVinoEncoder(model, static.path, "f32", "THROUGHPUT", threads=1,
                              origin=static.graph)
    assert encoder.graph.startswith(static.graph) and "THROUGHPUT" in encoder.graph
    actual = encoder.encode(QUALITY, batch_size=8)
    assert cosines(expected, actual).mean() > 0.95
    assert not np.allclose(actual, expected, atol=1e-6)


def test_missing_nncf_is_one_line_with_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert nncf_available() == ("nncf is not installed: pip install nncf (or this package's "
                                "[static] extra)")


def context(texts: list[str], quality: int, calibration: int, **extra: Any) -> Any:
    timing = Timing(quality_texts=quality, calibration_texts=calibration)
    return SimpleNamespace(texts=texts, settings=Settings(timing=timing), **extra)


def test_calibration_texts_are_apart_from_the_quality_texts() -> None:
    texts = [f"text {i}" for i in range(50)]
    assert calibration_texts(context(texts, 20, 10)) == texts[20:30]
    assert calibration_texts(context(texts, 20, 300)) == texts[20:]
    with pytest.raises(Skip, match="this corpus has 5 more"):
        calibration_texts(context(texts[:25], 20, 300))


def test_a_missing_nncf_skips_the_openvino_int8_row(
        monkeypatch: pytest.MonkeyPatch, model: Any) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    variant = next(v for v in variants(2) if v.name == "openvino_int8")
    assert variant.family == "static_int8"
    ctx = context(CORPUS, 40, 80, model=model, info=SimpleNamespace(device="cpu"))
    with pytest.raises(Skip, match=r"nncf is not installed: pip install nncf"), variant.build(ctx):
        pass


@pytest.mark.parametrize(("threads", "expected"),
                         [(1, []), (2, [(2, 1)]), (3, [(3, 1)]), (8, [(2, 4), (4, 2), (8, 1)])])
def test_instance_layouts_split_the_cores(threads: int, expected: list[tuple[int, int]]) -> None:
    assert layouts(threads) == expected


def test_instances_variants_follow_the_thread_count() -> None:
    names = [v.name for v in variants(2) if v.family == "instances"]
    assert names == ["instances_2x1"]
    assert not [v for v in variants(1) if v.family == "instances"]


def test_parallel_instances_encode_like_one_model(
        model: Any, tiny_model: Path, expected: np.ndarray) -> None:
    pool = InstancePool(sys.executable, str(tiny_model), "cpu", instances=2, threads=1)
    try:
        actual = pool.encode(QUALITY, batch_size=8)
        single = pool.encode(QUALITY[:1], batch_size=8)  # one instance gets nothing
        assert all(p.poll() is None for p in pool.processes)
        assert pool.rss_mb() > 2 * 50  # two interpreters with torch, each its own model
    finally:
        pool.close()
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_allclose(single, expected[:1], atol=1e-5)
    assert all(p.returncode is not None for p in pool.processes)


def test_an_instance_that_cannot_load_is_one_line(tmp_path: Path) -> None:
    python = tmp_path / "python"  # an instance that dies as a failed load does, without torch
    python.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
                      "echo 'OSError: no model at /nowhere' >&2\nexit 1\n")
    python.chmod(0o755)
    with pytest.raises(ProfilerError) as error:
        InstancePool(str(python), "/nowhere", "cpu", instances=2, threads=1)
    assert str(error.value) == "a model instance failed: OSError: no model at /nowhere"


def test_variants_module_lists_the_new_families() -> None:
    families = {v.family for v in variants(4)}
    assert {"static_int8", "instances"} <= families
    assert set(families) <= set(variants_module.FAMILIES)


@pytest.mark.parametrize(("backend", "package"), [("onnx", "optimum-onnx"),
                                                  ("openvino", "optimum-intel[openvino]")])
def test_sentence_transformers_backends_without_optimum_are_skipped_with_the_pip_line(
        monkeypatch: pytest.MonkeyPatch, model: Any, backend: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, "optimum", None)
    for name in ("optimum.onnxruntime", "optimum.intel"):
        monkeypatch.setitem(sys.modules, name, None)
    variant = next(v for v in variants(2) if v.name == f"st_{backend}")
    assert variant.family == backend and variant.snippet.endswith(f'backend="{backend}")')
    ctx = context(CORPUS, 40, 80, model=model, info=SimpleNamespace(device="cpu", path="x"))
    with pytest.raises(Skip) as skip, variant.build(ctx):
        pass
    assert f"needs {package}" in str(skip.value) and f"pip install {package}" in str(skip.value)
