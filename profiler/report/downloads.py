"""Each study's measured configurations as a CSV file: one row per configuration, flat columns."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import TYPE_CHECKING, Any

from profiler.storage import plain

if TYPE_CHECKING:
    from profiler.studies.serving import ServingResult

STAT_FIELDS = ("median", "min", "max", "p95", "cv", "n")  # raw samples stay in the JSON
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def study_rows(name: str, result: Any) -> list[dict[str, Any]]:
    """The rows of a study's CSV (from its typed result): its points, experiments or
    iterations, flattened."""
    if name == "optimizations":
        rows = [_plain(e) for e in result.experiments]
    elif name == "leak":
        rows = [{"iteration": i + 1, "rss_mb": mb, "steady": i >= result.steady_from}
                for i, mb in enumerate(result.rss_mb)]
    elif name == "serving":
        rows = serving_rows(result)
    else:
        rows = [_plain(p) for p in result.points]
    return [flatten(row) for row in rows]


def serving_rows(result: ServingResult) -> list[dict[str, Any]]:
    """Every run the serving study made: the capacity searches', then the load curves'."""
    searched = [{"phase": "capacity search", "configuration": config.name,
                 "setting": setting.label, **_plain(run)}
                for config in result.configs for setting in config.settings
                for run in setting.capacity.runs]
    loads = [{"phase": "latency against load", "configuration": "fp32",
              "setting": curve.label, **_plain(point)}
             for curve in result.curves for point in curve.points]
    return searched + loads


def _plain(row: Any) -> dict[str, Any]:
    found: dict[str, Any] = plain(dataclasses.asdict(row))  # as its JSON reads back
    return found


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars as they are; statistics objects as a few columns; nested tables joined by '_'."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "median" in value and "samples" in value:
            flat.update({f"{name}_{field}": value.get(field) for field in STAT_FIELDS})
        elif isinstance(value, dict):
            flat.update(flatten(value, f"{name}_"))
        elif not isinstance(value, list):
            flat[name] = value
    return flat


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with the union of the rows' columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{key: defused(value) for key, value in row.items()} for row in rows])
    return out.getvalue()


def defused(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, with a quote in front (OWASP's advice);
    numbers as they are."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value
