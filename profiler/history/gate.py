"""The one gate for data from elsewhere: history records, baselines and merged run folders.

`profiler restore` and `profiler merge` read what another machine wrote, and the site they
build runs on the owner's origin. Everything they bring in passes here before anything is
written: a record is rebuilt from its known fields, each checked for type, size and shape
(run ids of the generated pattern, ISO timestamps, finite numbers, plain text without markup
characters), so nothing foreign can choose a path, widen trust or put markup on the site.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from profiler.config import WORKLOADS
from profiler.safety import PLACEHOLDERS
from profiler.storage import mismatch

RUN_ID_PATTERN = r"^\d{8}T\d{6}Z(-\d{1,4})?$"  # what build.new_run_id makes
MAX_SAMPLES = 10_000
MAX_METRICS = 200
MAX_DEPTH = 12  # JSON nesting any of our files reaches is below 8
# characters none of our names, titles, units or reasons hold (but for redaction's
# placeholders), that would open a tag, a link, an attribute, code, a table cell or rich markup
MARKUP = re.compile(r"[<\"'`\[\]{}|\\\x00-\x1f\x7f\u2028\u2029]")


def _plain(text: str) -> str:
    if MARKUP.search(_without_placeholders(text)):
        raise ValueError("holds markup or control characters")
    return text


def _without_placeholders(text: str) -> str:
    """The text without the placeholders redaction puts where host details were."""
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, "")
    return text


def _iso(text: str) -> str:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not an ISO timestamp") from None
    if when.tzinfo is None:
        raise ValueError("has no time zone")
    return text


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("is not a finite number")
    return value


RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,80}$")]
Plain = Annotated[str, StringConstraints(max_length=200), AfterValidator(_plain)]
Created = Annotated[str, StringConstraints(max_length=40), AfterValidator(_iso)]
Finite = Annotated[float, AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0, le=10**9)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Commit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,64}$")]


class _Strict(BaseModel):
    """Known fields only, rebuilt: anything else a foreign file holds is left behind."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class ValidityRecord(_Strict):
    valid: bool
    reason: Plain | None = None
    cv: Finite | None = None
    n: Count = 0
    max_cv: Finite | None = None
    min_samples: Count | None = None
    half_width: Finite | None = None


class MetricRecord(_Strict):
    name: Name
    title: Plain
    study: Name
    unit: Annotated[str, StringConstraints(max_length=20), AfterValidator(_plain)]
    direction: Literal["higher", "lower"]
    samples: Annotated[list[Finite], Field(min_length=1, max_length=MAX_SAMPLES)]
    quantile: Annotated[float, Field(ge=0.0, le=1.0)]
    calibrated: bool
    validity: ValidityRecord | None = None


class Machine(_Strict):
    cpu_model: Plain | None
    logical_cores: Count | None
    ram_gb: Finite | None
    gpu: Plain | None
    device: Name | None


class ModelId(_Strict):
    name: Plain
    sha256: Sha256 | None


class Request(_Strict):
    quick: bool
    request_size: Count | None
    corpus_texts: Count
    texts: Count


class RunRecord(_Strict):
    """One run of the history (or a pinned baseline), as `history.store.record_of` writes it."""

    run_id: RunId
    created: Created
    commit: Commit | None = None
    machine: Machine
    libraries: dict[Name | Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,40}$")],
                    Annotated[str, StringConstraints(pattern=r"^[\w.+-]{1,40}$")]] = {}
    model: ModelId
    workload: Literal[WORKLOADS]  # type: ignore[valid-type]
    request: Request
    calibration_gflops: Annotated[list[Finite], Field(max_length=100)] = []
    metrics: Annotated[list[MetricRecord], Field(max_length=MAX_METRICS)]


class Rejected(ValueError):
    """Foreign data that did not pass the gate; the message says which field and why."""


def checked_record(data: Any) -> dict[str, Any]:
    """A history record rebuilt from its known, checked fields; Rejected naming the first fault."""
    _check_depth(data)
    try:
        return RunRecord.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise Rejected(mismatch(exc)) from None


def checked_records(runs: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The records that pass, oldest first, and one line for each that did not (dropped)."""
    if not isinstance(runs, list):
        raise Rejected("the runs are not a list")
    kept: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    for index, run in enumerate(runs):
        try:
            record = checked_record(run)
        except Rejected as exc:
            dropped.append(f"run {index + 1} ({_label(run)}): {exc}")
            continue
        if record["run_id"] in kept:
            dropped.append(f"run {index + 1} ({record['run_id']}): a second record of that run")
            continue
        kept[record["run_id"]] = record
    return sorted(kept.values(), key=lambda r: _when(r["created"])), dropped


def checked_run_id(value: Any, where: str) -> str:
    """A run id of the generated pattern, or Rejected saying where the bad one was."""
    if not isinstance(value, str) or not re.fullmatch(RUN_ID_PATTERN, value):
        raise Rejected(f"{where} has no valid run id")
    return value


def _when(created: str) -> dt.datetime:
    return dt.datetime.fromisoformat(created).astimezone(dt.timezone.utc)


def _label(run: Any) -> str:
    run_id = run.get("run_id") if isinstance(run, dict) else None
    if isinstance(run_id, str) and re.fullmatch(RUN_ID_PATTERN, run_id):
        return run_id
    return "no valid run id"


def _check_depth(data: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise Rejected(f"nested deeper than {MAX_DEPTH} levels")
    children = data.values() if isinstance(data, dict) else data if isinstance(data, list) else ()
    for child in children:
        _check_depth(child, depth + 1)

