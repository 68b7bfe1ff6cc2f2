"""A run's folder, `data/runs/<id>/`: the one place that knows its file names.

Everything that reads or writes a run goes through `RunDir`, so a file's name, and how it is
read (schema versions migrated, damage named in one line), live here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.storage import read_json, require, write_json, write_text

CONFIG = "config.json"  # the settings, model source, corpus and studies of the run
SYSTEM = "system.json"  # the machine and library versions
SUMMARY = "summary.json"  # headlines and analysis, written when the studies are done
CALIBRATION = "calibration.json"  # the machine's speed before and after the studies
COMPARISON = "comparison.json"  # verdicts against the baseline and the previous run
CONFIRM = "confirm"  # --confirm's re-measured studies, a folder shaped like a run
CONFIRMED = "metrics.json"  # in CONFIRM: the re-measured metrics, pooled with the run's
TEXTS = "texts.jsonl"  # the corpus as the build read it, for its study processes; not kept
RUN_FILES = (CONFIG, SYSTEM, SUMMARY)  # what every complete run holds besides its studies


@dataclass(frozen=True)
class RunDir:
    """A run folder: its files' paths, and their contents read and written with checks."""

    path: Path

    @property
    def id(self) -> str:
        """The run's id: its folder's name."""
        return self.path.name

    def file(self, name: str) -> Path:
        """The path of one of the run's files (CONFIG, SYSTEM, ...)."""
        return self.path / name

    def study_path(self, study: str, partial: bool = False) -> Path:
        """Where a study's result lives (`partial`: as its process wrote it, unverified)."""
        return self.path / f"{study}{'.partial' if partial else ''}.json"

    @property
    def logs(self) -> Path:
        """The folder of the study processes' logs."""
        return self.path / "logs"

    @property
    def scalene(self) -> Path:
        """The folder of the run's Scalene profiles."""
        return self.path / "scalene"

    @property
    def confirm(self) -> RunDir:
        """The folder of `--confirm`'s re-measured studies, itself shaped like a run."""
        return RunDir(self.path / CONFIRM)

    def is_run(self) -> bool:
        """Whether the folder holds a run's config (finished or not)."""
        return self.file(CONFIG).is_file()

    def has(self, name: str) -> bool:
        """Whether one of the run's files exists."""
        return self.file(name).is_file()

    def has_study(self, study: str) -> bool:
        """Whether the study finished in this run."""
        return self.study_path(study).is_file()

    def read(self, name: str, *fields: str) -> dict[str, Any]:
        """One of the run's files, migrated; ProfilerError names it if it lacks a field."""
        path = self.file(name)
        return require(path, read_json(path), *fields)

    def read_study(self, study: str, *fields: str, partial: bool = False) -> dict[str, Any]:
        """A study's result file, migrated; ProfilerError names it if it lacks a field."""
        path = self.study_path(study, partial)
        return require(path, read_json(path), *fields)

    def write(self, name: str, payload: dict[str, Any]) -> None:
        """Write one of the run's files atomically, with the schema version."""
        write_json(self.file(name), payload)

    def write_texts(self, texts: list[str]) -> None:
        """Keep the corpus as read, so study processes neither parse it again nor see edits."""
        write_text(self.file(TEXTS), "".join(json.dumps(t) + "\n" for t in texts))

    def read_texts(self) -> list[str]:
        """The texts `write_texts` kept."""
        with self.file(TEXTS).open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]

    def write_study(self, study: str, payload: dict[str, Any], partial: bool = False) -> None:
        """Write a study's result atomically, with the schema version."""
        write_json(self.study_path(study, partial), payload)
