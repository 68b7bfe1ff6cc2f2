"""Test helpers: run the real command line; read back tables and chart specs from built HTML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.specs: list[dict[str, Any]] = []
        self.chunks: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "div" and "vega-chart" in (found.get("class") or ""):
            self.specs.append(json.loads(found["data-spec"] or "{}"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    @property
    def text(self) -> str:
        """All the page's text, tags removed."""
        return " ".join(" ".join(self.chunks).split())

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self._cell is not None:
            self._cell.append(data)


def read_page(path: Path) -> _PageParser:
    """Parse a built HTML page into its tables (rows of cell text) and chart specs."""
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def table_by_header(page: _PageParser, first_header: str, contains: str) -> list[dict[str, str]]:
    """Return the rows (as header->cell dicts) of the first table whose header has `contains`."""
    for table in page.tables:
        header = table[0]
        if header and header[0] == first_header and any(contains in h for h in header):
            return [dict(zip(header, row, strict=True)) for row in table[1:]]
    raise AssertionError(f"no table with headers {first_header!r} and {contains!r}")


def fmt(value: float, digits: int = 1) -> str:
    """Format a figure as the pages do."""
    return f"{value:,.{digits}f}"


def run_profiler(*args: str, cwd: Path,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `profiler` command line in `cwd` (with extra environment variables)."""
    return subprocess.run([sys.executable, "-m", "profiler", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env} if env else None)


def run_cli(*args: str, cwd: Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `profiler` entry point in this process, in `cwd`; for commands that load no model.

    It goes through the same `main()` as the installed command, so a user error comes back as
    its one stderr line and exit code; an unexpected exception propagates (a traceback the user
    would see fails the test).
    """
    import contextlib
    import io

    from profiler.cli import main

    out, err, argv, here = io.StringIO(), io.StringIO(), sys.argv, Path.cwd()
    saved = dict(os.environ)
    os.environ.update(env or {})
    sys.argv = ["profiler", *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _exit_code(main)
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["profiler", *args], code, out.getvalue(), err.getvalue())


def _exit_code(entry: Any) -> int:
    try:
        entry()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def typed(study: str, data: dict[str, Any] | None) -> Any:
    """A study's result JSON (golden, or edited by a test) as the run's one reader reads it."""
    from profiler.studies import STUDIES

    return None if data is None else STUDIES[study].read(data)


def typed_all(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`typed` for every study's result of a run."""
    return {study: typed(study, data) for study, data in results.items()}


def recommend(optimizations: dict[str, Any] | None,
              batch: dict[str, Any] | None = None) -> list[Any]:
    """The recommendation rules on golden (or edited) JSON, as a run's reader gives it them."""
    from profiler.analysis import recommendations

    return recommendations.recommend(typed("optimizations", optimizations),
                                     typed("batch_size", batch))


def not_recommended(optimizations: dict[str, Any] | None,
                    batch: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`recommendations.not_recommended` on golden (or edited) JSON."""
    from profiler.analysis import recommendations

    return recommendations.not_recommended(typed("optimizations", optimizations),
                                           typed("batch_size", batch))


def best_configuration(optimizations: dict[str, Any]) -> dict[str, Any] | None:
    """`recommendations.best_configuration` on golden (or edited) JSON."""
    from profiler.analysis import recommendations

    return recommendations.best_configuration(typed("optimizations", optimizations))
