"""What every study shares: its context (model, texts, settings) and the Study base class."""

from __future__ import annotations

import functools
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from profiler.config import Settings
from profiler.errors import ProfilerError
from profiler.measure.metrics import Metric
from profiler.model import ModelInfo
from profiler.rundir import RunDir
from profiler.runner.probes import Probe
from profiler.storage import Record

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EVENT_PREFIX = "@@profiler "
T = TypeVar("T")


def emit(event: str, **fields: Any) -> None:
    """Tell the parent process how far the study is (one JSON line on stdout)."""
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def measure_each(values: tuple[int, ...], label: str, measure: Callable[[int], T],
                 summary: Callable[[T], str]) -> list[T]:
    """Measure each configuration in turn, telling the parent when each starts and ends."""
    points = []
    for index, value in enumerate(values):
        name = label.format(value)
        emit("config", label=name, index=index, total=len(values))
        points.append(measure(value))
        emit("done", label=name, summary=summary(points[-1]))
    return points


def round_progress(rounds: int, rates: dict[str, list[float]], widths: dict[str, float]) -> None:
    """Tell the parent how far a comparison's interleaved rounds are."""
    widest = max(widths.values(), default=0.0)
    emit("repeat", count=rounds, value=f"round {rounds}: widest interval ±{100 * widest:.1f}%")


@dataclass
class Profiling:
    """Switches Scalene's profiling on for a block when the study runs under Scalene."""

    under_scalene: bool = False

    @contextmanager
    def on(self) -> Iterator[None]:
        """Profile the block under Scalene; a no-op when not under Scalene."""
        if not self.under_scalene:
            yield
            return
        from scalene import scalene_profiler

        scalene_profiler.start()
        try:
            yield
        finally:
            scalene_profiler.stop()

    def view(self, work: Callable[[], object]) -> None:
        """Run `work` with Scalene profiling on, for its profile alone (it measures nothing the
        study reports); not under Scalene, skip it."""
        if self.under_scalene:
            with self.on():
                work()


@dataclass
class StudyContext:
    """Everything a study may use; built once per study process."""

    model: SentenceTransformer
    info: ModelInfo
    texts: list[str]
    settings: Settings
    profiling: Profiling = field(default_factory=Profiling)
    run_dir: Path | None = None  # earlier studies' results in this run, e.g. batch_size.json
    probes: dict[int, Probe] = field(default_factory=dict)  # batch size -> a started memory probe

    @property
    def device(self) -> str:
        """The device the model runs on."""
        return self.info.device

    @functools.cached_property
    def request(self) -> list[str]:
        """The texts of one request (bulk) or one stream pass: see Settings.request_texts."""
        from profiler.workloads import request_of

        return request_of(self.texts, self.settings.request_texts(len(self.texts)))

    def cycled(self, count: int) -> list[str]:
        """The first `count` corpus texts, starting over at the top when the corpus runs out."""
        return [self.texts[i % len(self.texts)] for i in range(count)]


class Study(ABC):
    """A study measures one axis of the model's behaviour and returns its typed result.

    RESULT is the result's dataclass: its fields are the `result` of the study's JSON, which
    `read` turns back into it with every field checked. `headline` and `metrics` read it.
    """

    NAME: ClassVar[str]
    TITLE: ClassVar[str]
    RESULT: ClassVar[type[Record]]

    @classmethod  # noqa: B027 (an optional hook: most studies accept any input)
    def validate(cls, settings: Settings, texts: list[str]) -> None:
        """Raise ProfilerError if this study cannot run on these settings and texts."""

    @abstractmethod
    def run(self, ctx: StudyContext) -> Record:
        """Measure, and return the study's result (raw samples included)."""

    @classmethod
    def read(cls, data: dict[str, Any]) -> Any:
        """The study's result from its JSON; ProfilerError names a field that does not fit."""
        return cls.RESULT.from_dict(data)

    @classmethod
    def read_from(cls, run: RunDir, study: dict[str, Any] | None = None,
                  partial: bool = False) -> Any:
        """The study's result in a run folder (from `study`, its file as already read, when
        given); ProfilerError names the file and the first field that does not fit."""
        found = run.read_study(cls.NAME, "result", partial=partial) if study is None else study
        try:
            return cls.read(found["result"])
        except ProfilerError as exc:
            raise ProfilerError(f"{run.study_path(cls.NAME, partial)} does not hold a "
                                f"{cls.NAME} result: {exc}") from None

    @staticmethod
    @abstractmethod
    def headline(result: Any) -> dict[str, Any]:
        """Pick the figures that belong in summary.json from this study's results."""

    @staticmethod
    def metrics(result: Any) -> list[Metric]:
        """The figures run history keeps and comparisons judge, with their samples."""
        return []


def quick_subset(sizes: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Under --quick: the smallest, a middle and the largest of the sizes asked for."""
    ordered = tuple(sorted(sizes))
    if len(ordered) <= 3:
        return ordered
    return (ordered[0], ordered[len(ordered) // 2], ordered[-1])
