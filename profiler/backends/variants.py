"""Configurations the optimization study compares with the fp32 baseline.

Each variant is a context manager that yields an `encode(texts, batch_size)` function and
undoes any change to the shared model on exit, or raises `Skip` with the reason it cannot run.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.backends.instances import layouts as instance_layouts
from profiler.config import EXPERIMENTS
from profiler.workloads import Encode, model_encode

if TYPE_CHECKING:
    from profiler.studies.base import StudyContext


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
    graph: str = "PyTorch eager, fp32 weights"  # how the model that runs was built
    batch_size: int | None = None  # a fixed batch size instead of searching for the best
    group: str | None = None  # the family users select it by, when not its name's prefix

    @property
    def family(self) -> str:
        """The name users select experiments by: threads_2 and threads_4 are both `threads`."""
        if self.group:
            return self.group
        return next((f for f in ("threads", "max_seq") if self.name.startswith(f + "_")),
                    self.name)


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
        plain = model_encode(ctx.model)

        def encode(texts: list[str], batch_size: int) -> Any:
            before = torch.get_num_threads()  # per call: other contenders share the model
            torch.set_num_threads(threads)
            try:
                return plain(texts, batch_size)
            finally:
                torch.set_num_threads(before)
        yield described(encode, "PyTorch eager, fp32 weights", threads)
    return build


def with_instances(instances: int, threads: int) -> Callable[[StudyContext], Any]:
    """`instances` model processes of `threads` threads each, the texts dealt among them."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        from profiler.backends.instances import InstancePool
        from profiler.runner.probes import plain_python

        if ctx.device != "cpu":
            raise Skip("parallel instances share out CPU cores")
        pool = InstancePool(plain_python(), ctx.info.path, ctx.device, instances, threads,
                            ctx.settings.trust_remote_code)
        try:
            graph = (f"PyTorch eager, fp32 weights, {instances} processes × {threads} "
                     f"thread{'s' if threads > 1 else ''}, each with its own copy of the model "
                     f"({pool.rss_mb():,.0f} MB resident together once loaded)")
            yield described(pool.encode, graph, instances * threads)
        finally:
            pool.close()
    return build


INSTANCES_SNIPPET = """\
# {n} processes of {m} thread{s} each (e.g. {n} server workers), each loading the model:
torch.set_num_threads({m})
model = SentenceTransformer(model_name)"""


def with_max_seq_length(tokens: int) -> Callable[[StudyContext], Any]:
    """The baseline truncating input at `tokens` tokens."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        limit = ctx.model.max_seq_length
        if limit is not None and tokens >= limit:
            raise Skip(f"the model already stops at {limit} tokens")
        plain = model_encode(ctx.model)

        def encode(texts: list[str], batch_size: int) -> Any:
            before = ctx.model.max_seq_length  # per call: other contenders share the model
            ctx.model.max_seq_length = tokens
            try:
                return plain(texts, batch_size)
            finally:
                ctx.model.max_seq_length = before
        yield encode
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


def exported(kind: str, precision: str = "f32") -> Callable[[StudyContext], Any]:
    """The transformer exported to ONNX, run by ONNX Runtime (plain, O2-fused, int8) or OpenVINO.

    Pooling and normalization stay in torch. Every backend gets torch's thread count.
    """
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        from profiler.backends.onnx import onnx_available

        problem = onnx_available() or _backend_problem(kind)
        if problem:
            raise Skip(problem)
        if ctx.device != "cpu":
            raise Skip("the exported-graph experiments run on the CPU")
        with tempfile.TemporaryDirectory(prefix="profiler-onnx-") as folder:
            yield _exported_encoder(ctx, Path(folder), kind, precision)
    return build


def _backend_problem(kind: str) -> str | None:
    """Why the runtime a kind needs beyond ONNX Runtime cannot run here, or None."""
    from profiler.backends.openvino import nncf_available, openvino_available

    return {"openvino": openvino_available, "nncf": nncf_available}.get(kind, lambda: None)()


MIN_CALIBRATION = 8  # texts: fewer leave the activation ranges to chance


def calibration_texts(ctx: StudyContext) -> list[str]:
    """Corpus texts to calibrate static int8 on, apart from those that score its quality."""
    timing = ctx.settings.timing
    texts = ctx.texts[timing.quality_texts:timing.quality_texts + timing.calibration_texts]
    if len(texts) < MIN_CALIBRATION:
        raise Skip(f"static int8 calibrates on corpus texts apart from the first "
                   f"{timing.quality_texts} that score quality; this corpus has {len(texts)} "
                   f"more (at least {MIN_CALIBRATION} needed)")
    return texts


def _exported_encoder(ctx: StudyContext, folder: Path, kind: str, precision: str) -> Encode:
    from profiler.backends.onnx import (
        OnnxEncoder,
        export_onnx,
        graph_origin,
        optimize_onnx,
        quantize_int8,
        quantize_static_int8,
    )
    from profiler.measure.peak import cpu_flags

    threads = _threads()
    if kind == "o2":  # ONNX Runtime fuses attention only from the eager attention's graph
        fused = optimize_onnx(export_onnx(ctx.model, folder, attention="eager"),
                              folder / "model_o2.onnx", ctx.model)
        return described(OnnxEncoder(ctx.model, fused.path, threads).encode, fused.graph, threads)
    path = _plain_export(ctx)
    origin = graph_origin(path)
    if kind == "int8":
        quantized = quantize_int8(path, folder / "model_int8.onnx", cpu_flags())
        graph = (f"{origin} + onnxruntime quantize_dynamic ({quantized.config.name} "
                 "configuration, as sentence-transformers' export_dynamic_quantized_onnx_model)")
        return described(OnnxEncoder(ctx.model, quantized.path, threads).encode, graph, threads)
    if kind == "static":
        static = quantize_static_int8(path, folder / "model_static.onnx", ctx.model,
                                      calibration_texts(ctx), cpu_flags())
        return described(OnnxEncoder(ctx.model, static.path, threads).encode, static.graph,
                         threads)
    if kind == "nncf":
        from profiler.backends.openvino import OpenVinoEncoder, quantize_nncf

        static = quantize_nncf(path, folder, ctx.model, calibration_texts(ctx))
        encoder = OpenVinoEncoder(ctx.model, static.path, "f32", _hint(ctx), threads,
                                  origin=static.graph)
        return described(encoder.encode, encoder.graph, threads)
    if kind == "openvino":
        from profiler.backends.openvino import OpenVinoEncoder

        encoder = OpenVinoEncoder(ctx.model, path, precision, _hint(ctx), threads)
        run = described(encoder.encode, encoder.graph, threads)
        # a CPU without bf16 instructions runs the bf16 hint in f32: compare with that peak
        run.peak_dtype = "bfloat16" if encoder.effective_precision == "bf16" else "float32"  # type: ignore[attr-defined]
        return run
    return described(OnnxEncoder(ctx.model, path, threads).encode,
                     f"{origin} → ONNX Runtime CPU provider", threads)


OPTIMUM = {"onnx": ("optimum.onnxruntime", "optimum-onnx"),
           "openvino": ("optimum.intel", "optimum-intel[openvino]")}


def st_backend_problem(backend: str) -> str | None:
    """Why sentence-transformers' own `backend=` cannot load here, or None."""
    import importlib
    from importlib.metadata import version

    module, package = OPTIMUM[backend]
    try:
        importlib.import_module(module)
    except ImportError as error:
        return (f"sentence-transformers' backend={backend!r} needs {package}, which cannot be "
                f"imported here ({str(error).splitlines()[0][:120]}): pip install {package}, "
                f"where its release accepts transformers {version('transformers')}; the "
                f"{backend!r} row measures this profiler's own export meanwhile")
    return None


def st_backend(backend: str) -> Callable[[StudyContext], Any]:
    """The model loaded the way users deploy it: `SentenceTransformer(path, backend=...)`."""
    @contextmanager
    def build(ctx: StudyContext) -> Iterator[Encode]:
        from sentence_transformers import SentenceTransformer

        if (problem := st_backend_problem(backend)) is not None:
            raise Skip(problem)
        if ctx.device != "cpu":
            raise Skip("the exported-graph experiments run on the CPU")
        kwargs = {"provider": "CPUExecutionProvider"} if backend == "onnx" else {}
        model = SentenceTransformer(ctx.info.path, device="cpu",
                                    backend=backend,  # type: ignore[arg-type]
                                    model_kwargs={**kwargs, "export": True},
                                    trust_remote_code=ctx.settings.trust_remote_code)
        graph = f"sentence-transformers backend={backend!r} (its own export through optimum)"
        yield described(model_encode(model), graph, _threads())
    return build


def _hint(ctx: StudyContext) -> str:
    """OpenVINO's own best mode: parallel infer requests for bulk, one request for a stream."""
    return "THROUGHPUT" if ctx.settings.workload == "bulk" else "LATENCY"


_EXPORTS: dict[int, Path] = {}


def _plain_export(ctx: StudyContext) -> Path:
    """Export the model once per process; ONNX Runtime, int8 and OpenVINO all start from it."""
    from profiler.backends.onnx import export_onnx

    key = id(ctx.model)
    if key not in _EXPORTS or not _EXPORTS[key].is_file():
        folder = Path(tempfile.mkdtemp(prefix="profiler-export-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _EXPORTS[key] = export_onnx(ctx.model, folder)
    return _EXPORTS[key]


def _threads() -> int:
    import torch

    return int(torch.get_num_threads()) or (os.cpu_count() or 1)


ONNX_SNIPPET = """\
# not measured in this row: sentence-transformers' own ONNX backend (needs optimum-onnx)
model = SentenceTransformer(model_name, backend="onnx")
# what this profiler measured, with the transformers installed here:
from profiler.backends.onnx import OnnxEncoder, export_onnx
encoder = OnnxEncoder(model, export_onnx(model, Path("onnx")))
embeddings = encoder.encode(texts, batch_size=BATCH)"""


def onnx_int8_snippet() -> str:
    """The int8 export code, with the quantization configuration this CPU gets."""
    from profiler.backends.onnx import choose_quant_config
    from profiler.measure.peak import cpu_flags

    config = choose_quant_config(cpu_flags()).name
    return f"""\
# not measured in this row: sentence-transformers' helper (needs optimum-onnx)
export_dynamic_quantized_onnx_model(model, "{config}", model_name_or_path)
# what this profiler measured, with the transformers installed here:
from profiler.backends.onnx import OnnxEncoder, export_onnx, quantize_int8
from profiler.measure.peak import cpu_flags
int8 = quantize_int8(export_onnx(model, Path("onnx")), Path("onnx/model_int8.onnx"), cpu_flags())
encoder = OnnxEncoder(model, int8.path)
embeddings = encoder.encode(texts, batch_size=BATCH)"""


OPENVINO_SNIPPET = """\
# not measured in this row: sentence-transformers' own backend (needs optimum-intel)
model = SentenceTransformer(model_name, backend="openvino")
# what this profiler measured, with the openvino package alone:
from profiler.backends.onnx import export_onnx
from profiler.backends.openvino import OpenVinoEncoder
encoder = OpenVinoEncoder(model, export_onnx(model, Path("onnx")), "{precision}", "{hint}")
embeddings = encoder.encode(texts, batch_size=BATCH)"""

NNCF_SNIPPET = """\
# not measured in this row: sentence-transformers' helper (needs optimum-intel;
# it calibrates on GLUE sst2 unless told otherwise)
export_static_quantized_openvino_model(model, OVQuantizationConfig(), model_name_or_path)
# what this profiler measured, with openvino and nncf alone, calibrated on your corpus:
calibration_texts = corpus[:300]  # texts like yours, apart from those you evaluate on
from profiler.backends.onnx import export_onnx
from profiler.backends.openvino import OpenVinoEncoder, quantize_nncf
int8 = quantize_nncf(export_onnx(model, Path("onnx")), Path("openvino"), model, calibration_texts)
encoder = OpenVinoEncoder(model, int8.path, "f32", "{hint}")
embeddings = encoder.encode(texts, batch_size=BATCH)"""

STATIC_ONNX_SNIPPET = """\
# ONNX Runtime static int8 (QDQ) calibrated on your corpus; layers after an activation stay fp32
calibration_texts = corpus[:300]  # texts like yours, apart from those you evaluate on
from profiler.backends.onnx import OnnxEncoder, export_onnx, quantize_static_int8
from profiler.measure.peak import cpu_flags
int8 = quantize_static_int8(export_onnx(model, Path("onnx")), Path("onnx/model_static.onnx"),
                            model, calibration_texts, cpu_flags())
embeddings = OnnxEncoder(model, int8.path).encode(texts, batch_size=BATCH)"""

O2_SNIPPET = """\
# optimum's O2 level: ONNX Runtime's transformer fusions on the exported graph
from profiler.backends.onnx import OnnxEncoder, export_onnx, optimize_onnx
fused = optimize_onnx(export_onnx(model, Path("onnx"), attention="eager"),
                      Path("onnx/model_o2.onnx"), model)
embeddings = OnnxEncoder(model, fused.path).encode(texts, batch_size=BATCH)"""

FAMILIES = EXPERIMENTS  # the experiments a user can pick; every variant belongs to one


def described(encode: Encode, graph: str, threads: int) -> Encode:
    """Attach how the running model was built, and its thread count, to an Encode."""
    def run(texts: list[str], batch_size: int) -> Any:
        return encode(texts, batch_size)
    run.graph, run.threads = graph, threads  # type: ignore[attr-defined]
    return run


def variants(threads: int, workload: str = "bulk") -> list[Variant]:
    """Every variant, baseline first; thread counts go from 1 to one below `threads`."""
    name = "SentenceTransformer(model_name"
    hint = "THROUGHPUT" if workload == "bulk" else "LATENCY"
    plain = [] if workload == "query" else [
        Variant("fp32_default", "fp32 at batch size 32 (plain model.encode)", "none",
                "model.encode(texts)", baseline, batch_size=32, group="fp32")]
    found = [
        Variant("fp32", "fp32 baseline", "none", f"{name})", baseline),
        *plain,
        Variant("bf16", "bfloat16 weights", "one line",
                f'{name}, model_kwargs={{"dtype": torch.bfloat16}})', with_dtype("bfloat16"),
                peak_dtype="bfloat16", graph="PyTorch eager, bfloat16 weights"),
        Variant("fp16", "float16 weights (GPU)", "one line",
                f'{name}, model_kwargs={{"dtype": torch.float16}})', with_dtype("float16"),
                peak_dtype="float16", graph="PyTorch eager, float16 weights"),
        Variant("torch_int8", "torch dynamic int8 (Linear layers)", "a few lines",
                "model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, "
                "dtype=torch.qint8)", torch_int8, peak_dtype="int8",
                graph="PyTorch eager, torch.ao dynamic int8 Linear layers"),
        Variant("onnx", "ONNX Runtime (fp32)", "an export step", ONNX_SNIPPET,
                exported("plain")),
        Variant("onnx_o2", "ONNX Runtime (fp32, O2 fusions)", "an export step", O2_SNIPPET,
                exported("o2"), group="onnx", quick=False),
        Variant("onnx_int8", "ONNX Runtime dynamic int8", "an export step",
                onnx_int8_snippet(), exported("int8"), peak_dtype="int8"),
        *(Variant(f"openvino{suffix}", f"OpenVINO ({precision} precision hint)",
                  "an export step", OPENVINO_SNIPPET.format(precision=precision, hint=hint),
                  exported("openvino", precision), peak_dtype=dtype, group="openvino",
                  quick=not suffix)
          for suffix, precision, dtype in (("", "f32", "float32"), ("_bf16", "bf16", "bfloat16"))),
        *(Variant(f"st_{backend}", f"sentence-transformers backend={backend!r}",
                  "one line", f'{name}, backend="{backend}")', st_backend(backend),
                  group=backend, quick=False, graph=f"sentence-transformers backend={backend!r}")
          for backend in OPTIMUM),
        Variant("openvino_int8", "OpenVINO static int8 (NNCF, calibrated on the corpus)",
                "an export step", NNCF_SNIPPET.format(hint=hint), exported("nncf"),
                peak_dtype="int8", group="static_int8", quick=False),  # calibration: ~20 s
        Variant("onnx_static_int8", "ONNX Runtime static int8 (QDQ, calibrated on the corpus)",
                "an export step", STATIC_ONNX_SNIPPET, exported("static"), peak_dtype="int8",
                group="static_int8", quick=False),
        *(Variant(f"instances_{n}x{m}", f"{n} instances × {m} thread{'s' if m > 1 else ''}",
                  "a deployment change", INSTANCES_SNIPPET.format(n=n, m=m, s="s" if m > 1 else ""),
                  with_instances(n, m), group="instances", quick=False)
          for n, m in instance_layouts(threads)),
        *(Variant(f"threads_{n}", f"{n} thread{'s' if n > 1 else ''}", "one line",
                  f"torch.set_num_threads({n})", with_threads(n), quick=False)
          for n in range(1, threads)),
        *(Variant(f"max_seq_{n}", f"max_seq_length {n}", "one line",
                  f"model.max_seq_length = {n}", with_max_seq_length(n), max_seq_length=n,
                  quick=False, graph=f"PyTorch eager, fp32, input cut at {n} tokens")
          for n in (128, 64)),
        Variant("compile", "torch.compile", "a compile step",
                "model[0].auto_model = torch.compile(model[0].auto_model, dynamic=True)",
                compiled, quick=False, graph="torch.compile (inductor, dynamic shapes), fp32"),
    ]
    return found
