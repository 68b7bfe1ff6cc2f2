"""Render Markdown pages from a run's JSON with Jinja templates and Altair chart specs."""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import jinja2

from profiler.analysis.derive import DERIVED, derive
from profiler.analysis.hotspots import cross_check
from profiler.analysis.verdicts import FDR_Q
from profiler.errors import ProfilerError, first_line
from profiler.history.store import HISTORY_FILE, load_history
from profiler.report.charts import CHARTS
from profiler.report.downloads import study_rows, to_csv
from profiler.report.trends import (
    load_matrix,
    load_trends,
    publish_history,
    write_run_records,
)
from profiler.rundir import COMPARISON, CONFIG, SUMMARY, SYSTEM, RunDir
from profiler.safety import code, finalize, host_details, markdown, redact, text
from profiler.storage import write_bytes, write_text
from profiler.studies import STUDIES
from profiler.workloads import DESCRIPTIONS

SUMMARY_FIELDS = ("run_id", "studies", "model", "device", "corpus", "workload", "scalene",
                  "bottlenecks", "context", "recommendations", "not_recommended")


def find_run(data: Path, run_id: str | None) -> Path:
    """Return data/runs/<run_id>, or data/latest; raise ProfilerError if there is none."""
    run = data / "runs" / run_id if run_id else data / "latest"
    if not RunDir(run).has(SUMMARY):
        what = f"run {run_id}" if run_id else "a complete run (data/latest)"
        raise ProfilerError(f"no results for {what}: run `profiler build` first")
    return run.resolve()


def environment(templates: Path) -> jinja2.Environment:
    """A Jinja environment that escapes what it prints, fails on undefined names, and formats
    numbers one way.

    Everything printed is escaped for Markdown (`safety.finalize`) unless a filter marked it
    trusted: `code` (a code span), `md` (Markdown our own analysis wrote), `e` (an attribute).
    """
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=True, finalize=finalize)
    env.filters["num"] = fmt_number
    env.filters["pct"] = lambda value, digits=1: fmt_number(100 * value, digits)
    env.filters["g"] = lambda value: f"{value:g}"  # a setting as given: 99.9, 2.5, 100
    env.filters["text"] = text
    env.filters["code"] = code
    env.filters["md"] = markdown
    env.globals["workloads"] = DESCRIPTIONS
    env.globals["fdr_q"] = FDR_Q
    return env


def fmt_number(value: float | None, digits: int = 1) -> str:
    """Format a figure the way every page shows it: thousands separators, fixed decimals."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render_pages(root: Path, run_dir: Path) -> list[Path]:
    """Write docs/index.md and docs/report/*.md from the run in `run_dir`."""
    env = environment(root / "templates")
    report = root / "docs" / "report"
    shutil.rmtree(report, ignore_errors=True)
    run = load_run(run_dir)
    hidden = [] if run["config"]["settings"].get("include_host_info") else host_details()
    run = redact(run, hidden)
    copy_downloads(run_dir, report, run, hidden)
    data = root / "data"
    write_run_records(data, report / "files")
    publish_history(data, report / "files")
    trends = load_trends(data, current_record(data, run_dir.name))
    pages = [_write(env, "index.md.j2", root / "docs" / "index.md", run=run, trends=trends),
             _write(env, "trends.md.j2", report / "trends.md", run=run, trends=trends),
             _write(env, "matrix.md.j2", report / "matrix.md", matrix=load_matrix(data)),
             _write(env, "bottlenecks.md.j2", report / "bottlenecks.md", run=run),
             _write(env, "recommendations.md.j2", report / "recommendations.md", run=run)]
    for name, study in STUDIES.items():
        pages.append(_write(env, f"{name}.md.j2", report / f"{name.replace('_', '-')}.md",
                            run=run, title=study.TITLE, study=run["studies"].get(name),
                            headline=run["summary"]["studies"].get(name),
                            charts=study_charts(name, run["results"].get(name))))
    return pages


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read a run's config, system, summary and study results into one template context."""
    run = RunDir(run_dir)
    summary = run.read(SUMMARY, *SUMMARY_FIELDS)
    studies = {name: run.read_study(name, "result", "model", "scalene")
               for name in summary["studies"]}
    results = {name: STUDIES[name].read_from(run, study) for name, study in studies.items()}
    config = run.read(CONFIG, "settings")
    for name, study in studies.items():  # templates read the JSON form, checked and filled in
        study["result"] = results[name].to_dict()
        hotspots = study.get("hotspots") or {}  # Scalene's against the independent profile
        study["hotspot_check"] = cross_check(hotspots.get("cpu_functions") or [],
                                             study["result"].get("reference_profile"))
    summary.update(analysis_of(results, config["settings"], summary))
    return {"id": run_dir.name, "comparison": load_comparison(run_dir),
            "config": config,
            "system": run.read(SYSTEM), "summary": summary,
            "studies": studies, "results": results,  # results: typed, for charts and downloads
            "pages": {name: f"report/{name.replace('_', '-')}.md" for name in STUDIES},
            "titles": {name: study.TITLE for name, study in STUDIES.items()}}


def analysis_of(results: dict[str, Any], settings: dict[str, Any],
                summary: dict[str, Any]) -> dict[str, Any]:
    """Today's analysis of the run's measurements; what the summary froze, if they predate it."""
    try:
        return derive(results, settings)
    except (KeyError, TypeError, ValueError):  # results from before a field today's analysis reads
        return {key: summary[key] for key in DERIVED if key in summary}


def load_comparison(run_dir: Path) -> dict[str, Any]:
    """The run's verdicts (comparison.json), or why there are none."""
    if not RunDir(run_dir).has(COMPARISON):
        return {"comparisons": [], "problems": [f"this run was not compared (no {COMPARISON})"],
                "confirmed": None}
    try:
        return RunDir(run_dir).read(COMPARISON)
    except ProfilerError as exc:
        return {"comparisons": [], "problems": [str(exc)], "confirmed": None}


def current_record(data: Path, run_id: str) -> dict[str, Any] | None:
    """The run's record in the history, if the history holds it."""
    try:
        runs = load_history(data / HISTORY_FILE)
    except ProfilerError:
        return None
    return next((r for r in runs if r["run_id"] == run_id), None)


def study_charts(name: str, result: Any) -> list[dict[str, str]]:
    """Return each chart's title and Vega-Lite spec (as JSON) for a study's page."""
    if result is None or name not in CHARTS:
        return []
    return [{"title": title, "spec": json.dumps(chart.to_dict(), separators=(",", ":"))}
            for title, chart in CHARTS[name](result)]


def copy_downloads(run_dir: Path, report: Path, run: dict[str, Any],
                   hidden: list[tuple[str, str]]) -> None:
    """Put the run's JSON files (host details hidden) and Scalene profiles on the site."""
    files = report / "files"
    files.mkdir(parents=True)
    for path in run_dir.glob("*.json"):
        data = redact(json.loads(path.read_text(encoding="utf-8")), hidden)
        write_text(files / path.name, json.dumps(data, indent=2) + "\n")
    for name, result in run["results"].items():  # one row per measured configuration
        write_text(files / f"{name}.csv", to_csv(study_rows(name, result)))
    if not run["config"]["settings"].get("scalene_html"):
        return  # raw profiles are MBs each: published only when asked for, with the viewer
    for name, study in run["studies"].items():
        profile, html = study["scalene"].get("profile"), study["scalene"].get("html")
        if profile:
            raw = check_gzip(scalene_file(run_dir, profile))
            write_bytes(files / f"{name}-scalene.json.gz", gzip.compress(
                redact(raw.decode("utf-8", "replace"), hidden).encode("utf-8"), mtime=0))
        if html:
            page = scalene_file(run_dir, html).read_text(encoding="utf-8", errors="replace")
            write_text(files / f"{name}-scalene.html", redact(page, hidden))


def scalene_file(run_dir: Path, relative: str) -> Path:
    """A profile the run names: a regular file in its own scalene/ folder, never elsewhere."""
    path = run_dir / relative
    folder = (run_dir / "scalene").resolve()
    if path.is_symlink() or path.resolve().parent != folder or not path.is_file():
        raise ProfilerError(f"{run_dir.name}'s Scalene file {relative!r} is not a file in its "
                            "scalene/ folder; it is not published")
    return path


def check_gzip(path: Path) -> bytes:
    """`path`'s content unpacked; ProfilerError naming it unless it is a whole gzip file."""
    try:
        with gzip.open(path, "rb") as packed:
            return packed.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ProfilerError(f"{path} is damaged ({first_line(exc, 160)}); it is left as it is and "
                            "not published") from None


def _write(env: jinja2.Environment, template: str, target: Path, **context: Any) -> Path:
    try:
        text = env.get_template(template).render(**context)
    except jinja2.TemplateNotFound:
        raise ProfilerError(f"template templates/{template} is missing") from None
    except (jinja2.UndefinedError, KeyError, TypeError, ValueError) as exc:
        run = context.get("run") or {}
        raise ProfilerError(f"templates/{template} could not use run {run.get('id', '?')}'s "
                            f"results ({first_line(exc, 160)}): a file of that run is damaged or "
                            "was edited by hand") from None
    write_text(target, text)
    return target
