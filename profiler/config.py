"""Settings: CLI flags > profiler.toml or [tool.profiler] > defaults, validated on creation."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.corpus import MAX_CORPUS_MB, MAX_TEXT_CHARS
from profiler.errors import ProfilerError
from profiler.storage import Record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_BATCH_SIZES = (8, 16, 32, 64, 128, 256)
DEFAULT_TEXT_LENGTHS = (10, 50, 100, 256, 512, 1024)
WORKLOADS = ("bulk", "stream", "query")
# the registry (profiler.studies) and the variants (profiler.backends.variants) assert they match
STUDY_NAMES = ("batch_size", "text_length", "memory", "leak", "stages", "optimizations",
               "serving")
BATCHERS = ("dynamic", "token_budget", "sort_window")  # profiler.serving.batchers asserts it
EXPERIMENTS = ("fp32", "bf16", "fp16", "torch_int8", "onnx", "onnx_int8", "openvino",
               "static_int8", "instances", "threads", "max_seq", "compile")
MIN_REQUEST_TEXTS = 1000  # a default request: the whole corpus, cycled up to this many texts
QUICK_REQUEST_TEXTS = 256  # --quick: this many texts, spread evenly over the corpus


@dataclass(frozen=True)
class Timing:
    """How long each configuration is measured."""

    warmup_repeats: int = 2
    min_time_s: float = 3.0
    min_repeats: int = 5
    max_repeats: int = 50
    texts_per_repeat: int = 256
    overhead_rounds: int = 3
    leak_iterations: int = 15
    leak_warmup: int = 3
    leak_texts: int = 64
    quality_texts: int = 300
    calibration_texts: int = 300  # static int8's calibration: the corpus texts after those
    workload_repeats: int = 5  # interleaved rounds at least, in every comparison
    query_texts: int = 500     # single-text calls timed for the query workload
    search_texts: int = 256    # at most these texts per size in each experiment's search
    round_texts: int = 128     # texts in a contender's warm-up share (whole batches); the
    # rounds' shares are sized by time from it (profiler.measure.rounds.Precision.share_s)
    precision: float = 0.03    # rounds stop once every claim's 95% interval is within ±3% ...
    budget_s: float = 60.0     # ... or once a comparison has taken this long
    max_rounds: int = 200

    def __post_init__(self) -> None:
        for name in ("warmup_repeats", "min_repeats", "max_repeats", "texts_per_repeat",
                     "overhead_rounds", "leak_warmup", "leak_texts", "quality_texts",
                     "calibration_texts", "workload_repeats", "query_texts", "search_texts",
                     "round_texts", "max_rounds"):
            _require_int(f"timing.{name}", getattr(self, name), minimum=0 if name in
                         ("warmup_repeats", "leak_warmup") else 1)
        # the steady state is the last half; a slope's interval needs at least three points
        _require_int("timing.leak_iterations", self.leak_iterations, minimum=6)
        if not _is_number(self.min_time_s) or self.min_time_s < 0:
            raise ProfilerError(f"timing.min_time_s must be a number >= 0, got {self.min_time_s!r}")
        if self.max_repeats < self.min_repeats:
            raise ProfilerError("timing.max_repeats must be at least timing.min_repeats")
        if not _is_number(self.precision) or not 0 < self.precision < 1:
            raise ProfilerError(f"timing.precision must be a fraction in (0, 1), got "
                                f"{self.precision!r}")
        if not _is_number(self.budget_s) or self.budget_s <= 0:
            raise ProfilerError(f"timing.budget_s must be a number > 0, got {self.budget_s!r}")
        if self.max_rounds < max(2, self.workload_repeats):
            raise ProfilerError("timing.max_rounds must be at least timing.workload_repeats "
                                "and 2")


@dataclass(frozen=True)
class Serving:
    """The serving study: the latency target, the load, and the batcher settings searched."""

    slo_ms: float = 100.0  # the latency target ...
    slo_percentile: float = 95.0  # ... that this percentile of requests must meet
    target_rps: float = 1000.0  # the load the fleet plan sizes replicas for
    request_texts: tuple[int, int] = (1, 1)  # each request carries between these many texts
    batchers: tuple[str, ...] = BATCHERS  # --quick: the first only, on a coarse search
    max_batch: tuple[int, ...] = (8, 32)  # texts a dynamic batch holds (x max_wait_ms) ...
    max_wait_ms: tuple[float, ...] = (5.0,)
    token_budgets: tuple[int, ...] = (2048,)  # padded tokens a token_budget batch may hold
    windows: tuple[int, ...] = (4,)  # ... and batches' worth a sort_window sorts (largest batch)
    resolution: float = 0.1  # the capacity search stops when the bracket is this narrow
    min_run_s: float = 1.5  # a run at one rate holds about this long of arrivals (and at
    # least the percentile's early-stopping count of requests); one too short to judge is run
    max_run_s: float = 8.0  # again this long, or as 4x that count if longer; no rate is run
    # whose fewest requests would take longer than 4 x max_run_s
    queue_limit: int = 1000  # requests queued past this are dropped (and counted)
    search_budget_s: float = 60.0  # one setting's capacity search stops narrowing after this
    tolerance: float = 0.2  # a simulation further than this from the measurement is not trusted

    def __post_init__(self) -> None:
        for name in ("slo_ms", "target_rps", "min_run_s", "max_run_s", "search_budget_s"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ProfilerError(f"serving.{name} must be a number > 0, got "
                                    f"{getattr(self, name)!r}")
        if not _is_number(self.slo_percentile) or not 0 < self.slo_percentile < 100:
            raise ProfilerError(f"serving.slo_percentile must be in (0, 100), got "
                                f"{self.slo_percentile!r}")
        for name in ("resolution", "tolerance"):
            if not _is_number(getattr(self, name)) or not 0 < getattr(self, name) < 1:
                raise ProfilerError(f"serving.{name} must be a fraction in (0, 1), got "
                                    f"{getattr(self, name)!r}")
        if self.max_run_s < self.min_run_s:
            raise ProfilerError("serving.max_run_s must be at least serving.min_run_s")
        _require_int("serving.queue_limit", self.queue_limit, minimum=1)
        texts = self.request_texts
        if len(texts) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                  for n in texts) or texts[0] > texts[1]:
            raise ProfilerError(f"serving.request_texts must be [least, most] texts per "
                                f"request, 1 <= least <= most, got {list(texts)}")
        if not self.batchers:
            raise ProfilerError("serving.batchers must name at least one batcher")
        for name in self.batchers:
            if name not in BATCHERS:
                raise ProfilerError(f"unknown batcher {name!r}; choose from "
                                    f"{', '.join(BATCHERS)}")
        for name in ("max_batch", "token_budgets", "windows"):
            _require_distinct_ints(f"serving.{name} value", getattr(self, name))
        if not self.max_wait_ms or any(not _is_number(w) or w < 0 for w in self.max_wait_ms):
            raise ProfilerError(f"serving.max_wait_ms must be a list of numbers >= 0, got "
                                f"{list(self.max_wait_ms)}")

    @classmethod
    def from_dict(cls, data: Any) -> Serving:
        """Read the [serving] table."""
        if not isinstance(data, dict):
            raise ProfilerError("serving must be a table of settings")
        _reject_unknown(data, {f.name for f in dataclasses.fields(cls)}, "serving.")
        values: dict[str, Any] = {key: tuple(_as_list(f"serving.{key}", value))
                                  if key in SERVING_LISTS else value for key, value in data.items()}
        return cls(**values)


SERVING_LISTS = ("request_texts", "batchers", "max_batch", "max_wait_ms", "token_budgets",
                 "windows")


@dataclass(frozen=True)
class Settings(Record):
    """Everything a build needs to know; saved with every run."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    corpus: str | None = None
    corpus_max_mb: float = MAX_CORPUS_MB  # a bigger corpus file is refused before it is read
    text_max_chars: int = MAX_TEXT_CHARS  # ... and so is one with a longer text
    studies: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    text_lengths: tuple[int, ...] = DEFAULT_TEXT_LENGTHS
    length_batch_size: int = 32
    scalene: bool = True
    scalene_html: bool = False  # also publish Scalene's own HTML viewer (several MB a study)
    cold_start: bool = True  # time a fresh process's import, load and first call (full builds)
    quick: bool = False
    recommend_within: float = 0.05
    leak_threshold_mb: float = 0.05
    experiments: tuple[str, ...] = ()
    quality_threshold: float = 0.995  # mean cosine to fp32 that keeps quality, and ...
    quality_recall: float = 0.95  # ... the share of fp32's 10 nearest neighbours it keeps
    workload: str = "bulk"
    request_size: int | None = None  # texts per request; None: the whole corpus (>= 1,000)
    token_budget: int | None = None  # padded tokens per batch; None: batch size x mean tokens
    memory_budget_mb: float = 2048.0
    memory_limit_mb: float | None = None  # per memory-study batch, beyond the loaded model
    trust_remote_code: bool = False
    include_host_info: bool = False  # publish home paths, user and host names unshortened
    targets: dict[str, float] = field(default_factory=dict)  # service targets over the defaults
    history_cap: int = 200  # runs data/history.json keeps; older ones thinned to one a week
    margins: dict[str, float] = field(default_factory=dict)  # metric (or "default") -> margin
    max_cv: float = 0.10  # a configuration whose samples spread more is too noisy to claim on
    min_samples: int = 2  # ... or that has fewer; --quick times 2 passes per configuration
    timing: Timing = field(default_factory=Timing)
    serving: Serving = field(default_factory=Serving)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ProfilerError("model must be a hub id or a model directory")
        if self.device not in DEVICES:
            raise ProfilerError(f"unknown device {self.device!r}; choose one of "
                                f"{', '.join(DEVICES)}")
        if self.corpus is not None and not isinstance(self.corpus, str):
            raise ProfilerError(f"corpus must be a file path, got {self.corpus!r}")
        if not _is_number(self.corpus_max_mb) or self.corpus_max_mb <= 0:
            raise ProfilerError(f"corpus_max_mb must be a number > 0, got {self.corpus_max_mb!r}")
        _require_int("text_max_chars", self.text_max_chars, minimum=1)
        _require_distinct_ints("batch size", self.batch_sizes)
        _require_distinct_ints("text length", self.text_lengths)
        _require_int("length_batch_size", self.length_batch_size, minimum=1)
        if not _is_number(self.recommend_within) or not 0 <= self.recommend_within < 1:
            raise ProfilerError("recommend_within must be in [0, 1)")
        if not _is_number(self.leak_threshold_mb) or self.leak_threshold_mb < 0:
            raise ProfilerError(f"leak_threshold_mb must be a number >= 0, got "
                                f"{self.leak_threshold_mb!r}")
        _check_studies(self.studies)
        _check_experiments(self.experiments)
        if self.workload not in WORKLOADS:
            raise ProfilerError(f"unknown workload {self.workload!r}; choose one of "
                                f"{', '.join(WORKLOADS)}")
        for name in ("request_size", "token_budget"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name), minimum=1)
        if not _is_number(self.memory_budget_mb) or self.memory_budget_mb <= 0:
            raise ProfilerError(f"memory_budget_mb must be a number > 0, got "
                                f"{self.memory_budget_mb!r}")
        if self.memory_limit_mb is not None and (not _is_number(self.memory_limit_mb)
                                                 or self.memory_limit_mb <= 0):
            raise ProfilerError(f"memory_limit_mb must be a number > 0, got "
                                f"{self.memory_limit_mb!r}")
        for name in ("trust_remote_code", "scalene_html", "include_host_info", "cold_start"):
            if not isinstance(getattr(self, name), bool):
                raise ProfilerError(f"{name} must be true or false, got "
                                    f"{getattr(self, name)!r}")
        _require_int("history_cap", self.history_cap, minimum=2)
        _require_int("min_samples", self.min_samples, minimum=2)  # a CV needs two samples
        if not _is_number(self.max_cv) or self.max_cv <= 0:
            raise ProfilerError(f"max_cv must be a number > 0, got {self.max_cv!r}")
        _check_margins(self.margins)
        _check_targets(self.targets)
        if not _is_number(self.quality_threshold) or not 0 < self.quality_threshold <= 1:
            raise ProfilerError(f"quality_threshold must be in (0, 1], got "
                                f"{self.quality_threshold!r}")
        if not _is_number(self.quality_recall) or not 0 <= self.quality_recall <= 1:
            raise ProfilerError(f"quality_recall must be in [0, 1], got {self.quality_recall!r}")

    def request_texts(self, corpus_texts: int) -> int:
        """Texts in one request: as set, else the whole corpus (at least 1,000; 256 if quick)."""
        if self.request_size is not None:
            return self.request_size
        return QUICK_REQUEST_TEXTS if self.quick else max(corpus_texts, MIN_REQUEST_TEXTS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Build settings from plain data, e.g. a saved run's config.json."""
        data = dict(data)
        _reject_unknown(data, {f.name for f in dataclasses.fields(cls)} | {"schema_version"})
        data.pop("schema_version", None)
        timing = data.pop("timing", {})
        if not isinstance(timing, dict):
            raise ProfilerError("timing must be a table of settings")
        _reject_unknown(timing, {f.name for f in dataclasses.fields(Timing)}, "timing.")
        for key in ("studies", "batch_sizes", "text_lengths", "experiments"):
            if key in data:
                data[key] = tuple(_as_list(key, data[key]))
        serving = Serving.from_dict(data.pop("serving", {}))
        return cls(**data, timing=Timing(**timing), serving=serving)


def load_settings(cli: dict[str, Any], root: Path, config_file: Path | None = None) -> Settings:
    """Merge defaults, the config file and CLI flags (highest wins) into validated settings."""
    merged = read_config_file(config_file, root)
    serving = cli.get("serving") or {}
    merged.update({key: value for key, value in cli.items()
                   if value is not None and key != "serving"})
    if serving:  # --slo-ms and friends override single keys of the file's [serving] table
        table = merged.get("serving", {})
        merged["serving"] = {**table, **serving} if isinstance(table, dict) else table
    if merged.get("quick"):
        Settings.from_dict(merged)  # the file's own [timing] must still be valid
        merged["timing"] = dataclasses.asdict(QUICK_TIMING)
    return Settings.from_dict(merged)


def read_config_file(path: Path | None, root: Path) -> dict[str, Any]:
    """Read profiler.toml, or [tool.profiler] in pyproject.toml, or the file given."""
    if path is not None:
        return _read_table(path, tool_table=path.name == "pyproject.toml")
    if (root / "profiler.toml").is_file():
        return _read_table(root / "profiler.toml", tool_table=False)
    if (root / "pyproject.toml").is_file():
        return _read_table(root / "pyproject.toml", tool_table=True)
    return {}


def _read_table(path: Path, tool_table: bool) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfilerError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ProfilerError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfilerError(f"config file {path} is not valid TOML: {exc}") from None
    if tool_table:
        data = data.get("tool", {}).get("profiler", {})
    return _underscored(data)


def _underscored(table: dict[str, Any]) -> dict[str, Any]:
    """Accept kebab-case keys (`batch-sizes`) as well as snake_case, in nested tables too."""
    return {key.replace("-", "_"): _underscored(value) if isinstance(value, dict) else value
            for key, value in table.items()}


def _check_margins(margins: Any) -> None:
    if not isinstance(margins, dict):
        raise ProfilerError(f"margins must be a table of metric = fraction, got {margins!r}")
    for name, value in margins.items():
        if not _is_number(value) or not 0 < value < 1:
            raise ProfilerError(f"margins.{name} must be a fraction in (0, 1), got {value!r}")


def _check_targets(targets: Any) -> None:
    known = ("throughput_texts_per_s", "latency_ms_per_text_p95", "peak_memory_mb")
    if not isinstance(targets, dict):
        raise ProfilerError(f"targets must be a table of target = limit, got {targets!r}")
    for name, value in targets.items():
        if name not in known:
            raise ProfilerError(f"unknown target {name!r}; choose from {', '.join(known)}")
        if not _is_number(value) or value <= 0:
            raise ProfilerError(f"targets.{name} must be a number > 0, got {value!r}")


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ProfilerError(f"{name} must be a list, got {value!r}")


def _require_distinct_ints(name: str, values: tuple[int, ...]) -> None:
    if not values:
        raise ProfilerError(f"give at least one {name}")
    for value in values:
        _require_int(name, value, minimum=1)
    if len(set(values)) != len(values):
        raise ProfilerError(f"{name}s must not repeat, got {list(values)}")


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, NaN or infinity)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if minimum > 1:
            kind = f"a positive integer of at least {minimum}"
        raise ProfilerError(f"{name} must be {kind}, got {value!r}")


def _reject_unknown(data: dict[str, Any], known: set[str], prefix: str = "") -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfilerError(f"unknown setting {prefix + unknown[0]!r}")  # 'timing.repeats'


def _check_studies(studies: tuple[str, ...]) -> None:
    for name in studies:
        if name not in STUDY_NAMES:
            raise ProfilerError(f"unknown study {name!r}; choose from {', '.join(STUDY_NAMES)}")


def _check_experiments(experiments: tuple[str, ...]) -> None:
    for name in experiments:
        if name not in EXPERIMENTS:
            raise ProfilerError(
                f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")


# --quick: the same interleaved rounds with a looser target and a smaller budget
QUICK_TIMING = Timing(warmup_repeats=1, min_time_s=0.3, min_repeats=2, max_repeats=5,
                      texts_per_repeat=64, overhead_rounds=1, leak_iterations=8,
                      leak_warmup=1, leak_texts=32, quality_texts=100, calibration_texts=100,
                      workload_repeats=3,
                      query_texts=100, search_texts=64, round_texts=48, precision=0.06,
                      budget_s=8.0, max_rounds=60)
