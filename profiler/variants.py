"""Configurations the optimization study compares with the fp32 baseline.

Each variant is a context manager that yields an `encode(texts, batch_size)` function and
undoes any change to the shared model on exit, or raises `Skip` with the reason it cannot run.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from profiler.studies.base import StudyContext

Encode = Callable[[list[str], int], "np.ndarray"]


class Skip(Exception):
    """This variant cannot run here; the message says why."""


@dataclass(frozen=True)
class Variant:
    """One configuration: how to build it, what it costs to adopt, and the code to adopt it."""

    name: str
    title: str
    effort: str  # one line | an export step | a compile step
    snippet: str
    build: Callable[[StudyContext], Any]  # a context manager yielding an Encode
    peak_dtype: str = "float32"
    quick: bool = True  # also runs under --quick
    max_seq_length: int | None = None

    @property
    def family(self) -> str:
        """The name users select experiments by: threads_2 and threads_4 are both `threads`."""
        return next((f for f in ("threads", "max_seq") if self.name.startswith(f + "_")),
                    self.name)


def model_encode(model: Any) -> Encode:
    """Wrap a SentenceTransformer's encode as an Encode."""
    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                            convert_to_numpy=True)
    return encode


@contextmanager
def baseline(ctx: StudyContext) -> Iterator[Encode]:
    """The model as loaded: fp32, every thread, its own max_seq_length."""
    yield model_encode(ctx.model)


def with_dtype(dtype_name: str) -> Callable[[StudyContext], Any]:
    """A copy of the model cast to `dtype_name` (bfloat16, float16)."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        import torch

        if dtype_name == "float16" and not ctx.device.startswith("cuda"):
            raise Skip("float16 matmuls are only fast on a GPU; this run is on "
                       f"{ctx.device}")
        model = copy.deepcopy(ctx.model).to(getattr(torch, dtype_name))
        yield model_encode(model)
    return build


@contextmanager
def torch_int8(ctx: StudyContext) -> Iterator[Encode]:
    """torch dynamic int8 quantization of every Linear layer (CPU only)."""
    import torch

    if ctx.device != "cpu":
        raise Skip("torch dynamic quantization runs on the CPU only")
    model = copy.deepcopy(ctx.model)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                       dtype=torch.qint8)
    yield model_encode(quantized)


def with_threads(threads: int) -> Callable[[StudyContext], Any]:
    """The baseline with torch limited to `threads` intra-op threads."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        import torch

        if ctx.device != "cpu":
            raise Skip("thread count only matters on the CPU")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield model_encode(ctx.model)
        finally:
            torch.set_num_threads(before)
    return build


def with_max_seq_length(tokens: int) -> Callable[[StudyContext], Any]:
    """The baseline truncating input at `tokens` tokens."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        before = ctx.model.max_seq_length
        if before is not None and tokens >= before:
            raise Skip(f"the model already stops at {before} tokens")
        ctx.model.max_seq_length = tokens
        try:
            yield model_encode(ctx.model)
        finally:
            ctx.model.max_seq_length = before
    return build


@contextmanager
def compiled(ctx: StudyContext) -> Iterator[Encode]:
    """torch.compile on the transformer (dynamic shapes, default inductor backend)."""
    import torch

    model = copy.deepcopy(ctx.model)
    module: Any = model[0].auto_model
    try:
        model[0].auto_model = torch.compile(module, dynamic=True)  # type: ignore[assignment]
        model.encode(ctx.texts[:8], batch_size=8)  # compile now, inside the setup time
    except Exception as exc:  # inductor needs a C++ toolchain and may fail in many ways
        raise Skip(f"torch.compile failed: {str(exc).splitlines()[0][:160]}") from None
    yield model_encode(model)


def onnx(quantize: bool) -> Callable[[StudyContext], Any]:
    """The transformer exported to ONNX and run by ONNX Runtime; optionally int8."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        from profiler.onnx_backend import onnx_available

        problem = onnx_available()
        if problem:
            raise Skip(problem)
        if ctx.device != "cpu":
            raise Skip("the ONNX experiments use ONNX Runtime's CPU provider")
        with tempfile.TemporaryDirectory(prefix="profiler-onnx-") as folder:
            yield _onnx_encoder(ctx, Path(folder), quantize)
    return build


def _onnx_encoder(ctx: StudyContext, folder: Path, quantize: bool) -> Encode:
    from profiler.measure.peak import cpu_flags
    from profiler.onnx_backend import OnnxEncoder, export_onnx, quantize_int8

    path = export_onnx(ctx.model, folder)
    if quantize:
        path = quantize_int8(path, folder / "model_int8.onnx", cpu_flags()).path
    return OnnxEncoder(ctx.model, path, threads=_threads()).encode


def _threads() -> int:
    import torch

    return int(torch.get_num_threads()) or (os.cpu_count() or 1)


def _skip(reason: str) -> Callable[[StudyContext], Any]:
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        raise Skip(reason)
        yield  # pragma: no cover
    return build


# Why the OpenVINO backend is not measured: it cannot be installed next to these versions.
OPENVINO_REASON = ("OpenVINO needs optimum-intel, whose releases pin torch and transformers to "
                   "versions other than the ones installed; install "
                   "`sentence-transformers[openvino]` in a separate environment to try it")


ONNX_SNIPPET = """\
# sentence-transformers' own ONNX backend (needs optimum-onnx, which pins transformers < 4.58):
model = SentenceTransformer(model_name, backend="onnx")
# what this profiler measured, with the transformers installed here:
from profiler.onnx_backend import OnnxEncoder, export_onnx
encoder = OnnxEncoder(model, export_onnx(model, Path("onnx")))
embeddings = encoder.encode(texts, batch_size=BATCH)"""


def onnx_int8_snippet() -> str:
    """The int8 export code, with the quantization configuration this CPU gets."""
    from profiler.measure.peak import cpu_flags
    from profiler.onnx_backend import choose_quant_config

    config = choose_quant_config(cpu_flags()).name
    return f"""\
# sentence-transformers' helper (needs optimum-onnx):
export_dynamic_quantized_onnx_model(model, "{config}", model_name_or_path)
# what this profiler measured, with the transformers installed here:
from profiler.onnx_backend import OnnxEncoder, export_onnx, quantize_int8
from profiler.measure.peak import cpu_flags
int8 = quantize_int8(export_onnx(model, Path("onnx")), Path("onnx/model_int8.onnx"), cpu_flags())
encoder = OnnxEncoder(model, int8.path)
embeddings = encoder.encode(texts, batch_size=BATCH)"""


FAMILIES = ("fp32", "bf16", "fp16", "torch_int8", "onnx", "onnx_int8", "openvino", "threads",
            "max_seq", "compile")


def variants(threads: int) -> list[Variant]:
    """Every variant, baseline first; thread counts go from 1 to one below `threads`."""
    name = "SentenceTransformer(model_name"
    found = [
        Variant("fp32", "fp32 baseline", "none", f"{name})", baseline),
        Variant("bf16", "bfloat16 weights", "one line",
                f'{name}, model_kwargs={{"dtype": torch.bfloat16}})', with_dtype("bfloat16"),
                peak_dtype="bfloat16"),
        Variant("fp16", "float16 weights (GPU)", "one line",
                f'{name}, model_kwargs={{"dtype": torch.float16}})', with_dtype("float16"),
                peak_dtype="float16"),
        Variant("torch_int8", "torch dynamic int8 (Linear layers)", "a few lines",
                "model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, "
                "dtype=torch.qint8)", torch_int8, peak_dtype="int8"),
        Variant("onnx", "ONNX Runtime (fp32)", "an export step", ONNX_SNIPPET,
                onnx(quantize=False)),
        Variant("onnx_int8", "ONNX Runtime dynamic int8", "an export step",
                onnx_int8_snippet(), onnx(quantize=True), peak_dtype="int8"),
        Variant("openvino", "OpenVINO", "an export step", f'{name}, backend="openvino")',
                _skip(OPENVINO_REASON)),
        *(Variant(f"threads_{n}", f"{n} thread{'s' if n > 1 else ''}", "one line",
                  f"torch.set_num_threads({n})", with_threads(n)) for n in range(1, threads)),
        *(Variant(f"max_seq_{n}", f"max_seq_length {n}", "one line",
                  f"model.max_seq_length = {n}", with_max_seq_length(n), max_seq_length=n)
          for n in (128, 64)),
        Variant("compile", "torch.compile", "a compile step",
                "model[0].auto_model = torch.compile(model[0].auto_model, dynamic=True)",
                compiled, quick=False),
    ]
    return found
