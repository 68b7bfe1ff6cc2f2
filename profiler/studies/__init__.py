"""The registry of studies: adding a study is adding a module and a line here."""

from __future__ import annotations

from profiler.config import STUDY_NAMES
from profiler.studies.base import Study
from profiler.studies.batch_size import BatchSizeStudy
from profiler.studies.leak import LeakStudy
from profiler.studies.memory import MemoryStudy
from profiler.studies.optimizations import OptimizationsStudy
from profiler.studies.serving import ServingStudy
from profiler.studies.stages import StagesStudy
from profiler.studies.text_length import TextLengthStudy

STUDIES: dict[str, type[Study]] = {
    study.NAME: study for study in (BatchSizeStudy, TextLengthStudy, MemoryStudy, LeakStudy,
                                        StagesStudy, OptimizationsStudy, ServingStudy)}
assert tuple(STUDIES) == STUDY_NAMES, "config.STUDY_NAMES must list the registry's studies"

