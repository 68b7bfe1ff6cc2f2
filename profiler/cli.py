"""The `profiler` command: thin click commands over build, render and publish functions."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from profiler.config import DEVICES, WORKLOADS
from profiler.errors import ProfilerError

REGRESSION_EXIT = 3  # history.tracking.REGRESSION_EXIT, without importing the analysis here


@click.group()
@click.version_option(package_name="embedding-profiler")
def cli() -> None:
    """Profile a sentence-transformers model and publish the evidence as a static site."""


@cli.command()
@click.option("--model", help="Hub id or local model directory [default: all-MiniLM-L6-v2].")
@click.option("--device", type=click.Choice(DEVICES), help="Device [default: auto].")
@click.option("--corpus", help="Texts to embed: .txt (a line each), .jsonl or .csv ('text').")
@click.option("--batch-sizes", help="Comma-separated batch sizes [default: 8,16,32,64,128,256].")
@click.option("--study", "studies", multiple=True, help="Run only this study (repeatable).")
@click.option("--experiment", "experiments", multiple=True,
              help="Run only this optimization experiment (repeatable), e.g. bf16, onnx.")
@click.option("--quality-threshold", type=float,
              help="Mean cosine to fp32 a configuration must keep [default: 0.995].")
@click.option("--workload", type=click.Choice(WORKLOADS),
              help="The workload you serve: bulk lists, a stream of batches or single queries "
                   "[default: bulk].")
@click.option("--request-size", help="Texts per request [default: the whole corpus, >= 1,000].")
@click.option("--token-budget", help="Padded tokens per batch for the token-budget experiment.")
@click.option("--memory-budget-mb", type=float, help="Peak memory allowed [default: 2048].")
@click.option("--trust-remote-code", is_flag=True, default=None,
              help="Allow models whose modules are their own code.")
@click.option("--quick", is_flag=True, default=None, help="Fewer repeats: a fast, noisier run.")
@click.option("--no-scalene", "no_scalene", is_flag=True, help="Run the studies unprofiled.")
@click.option("--scalene-html", is_flag=True, default=None,
              help="Also publish Scalene's raw profiles and HTML viewer (several MB a study).")
@click.option("--include-host-info", is_flag=True, default=None,
              help="Publish home-directory paths, the user and host names as they are.")
@click.option("--no-site", is_flag=True, help="Write results and pages but skip mkdocs build.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="Settings file [default: profiler.toml or [tool.profiler] in pyproject].")
@click.option("--confirm", is_flag=True,
              help="Re-measure, with more repeats, studies with a REGRESSED or INCONCLUSIVE "
                   "metric, and judge again on the pooled samples.")
@click.option("--fail-on-regression", is_flag=True,
              help=f"Exit {REGRESSION_EXIT} when a metric REGRESSED (after the site is written).")
@click.option("--memory-limit-mb", type=float,
              help="Memory a memory-study batch may take beyond the loaded model; a batch that "
                   "needs more is recorded as out of memory [default: no limit].")
@click.option("--slo-ms", type=float,
              help="Serving study: the latency target in ms [default: 100].")
@click.option("--slo-percentile", type=float,
              help="Serving study: the percentile of requests held to it [default: 95].")
@click.option("--target-rps", type=float,
              help="Serving study: the load to size replicas for, requests/s [default: 1000].")
@click.option("--resume", is_flag=True,
              help="Finish the newest incomplete run (data/runs/.incomplete) with its own "
                   "settings, measuring only the studies it lacks.")
def build(model: str | None, device: str | None, corpus: str | None, batch_sizes: str | None,
          studies: tuple[str, ...], experiments: tuple[str, ...],
          quality_threshold: float | None, workload: str | None, request_size: str | None,
          token_budget: str | None, memory_budget_mb: float | None,
          trust_remote_code: bool | None, quick: bool | None, no_scalene: bool,
          scalene_html: bool | None, include_host_info: bool | None, no_site: bool,
          config_file: Path | None, confirm: bool, fail_on_regression: bool,
          memory_limit_mb: float | None, slo_ms: float | None, slo_percentile: float | None,
          target_rps: float | None, resume: bool) -> None:
    """Run every study, store the results in data/, render the pages and build the site."""
    from profiler.build import (
        Workspace,
        is_complete,
        measure_again,
        plan_build,
        resume_plan,
        run_build,
    )
    from profiler.config import load_settings
    from profiler.display import ProgressDisplay
    from profiler.history.tracking import confirm_run, track_run
    from profiler.lock import project_lock
    from profiler.rundir import SUMMARY, RunDir

    cli_values: dict[str, Any] = {
        "model": model, "device": device, "corpus": corpus, "quick": quick,
        "batch_sizes": parse_int_list(batch_sizes) if batch_sizes is not None else None,
        "studies": list(studies) or None, "scalene": False if no_scalene else None,
        "scalene_html": scalene_html, "include_host_info": include_host_info,
        "experiments": list(experiments) or None, "quality_threshold": quality_threshold,
        "workload": workload, "memory_budget_mb": memory_budget_mb,
        "trust_remote_code": trust_remote_code,
        "request_size": parse_int("request size", request_size),
        "token_budget": parse_int("token budget", token_budget),
        "memory_limit_mb": memory_limit_mb,
        "serving": {key: value for key, value in (("slo_ms", slo_ms), ("target_rps", target_rps),
                    ("slo_percentile", slo_percentile)) if value is not None} or None}
    workspace = Workspace(Path.cwd())
    workspace.check()
    if resume and (config_file or any(v not in (None, False) for v in cli_values.values())):
        raise ProfilerError("--resume finishes the incomplete run with the settings it started "
                            "with: give no other settings")
    # checked before the progress display starts: a bad input is one line on stderr, no more
    planned = None if resume else plan_build(load_settings(cli_values, workspace.root,
                                                           config_file), workspace)
    with project_lock(workspace.root, "profiler build") as note:
        if note:
            click.echo(f"note: {note}", err=True)
        plan, staging = resume_plan(workspace) if planned is None else (planned, None)
        with ProgressDisplay() as display:
            run_dir = run_build(plan, workspace, display.on_event, staging)
            if not is_complete(run_dir):
                if RunDir(run_dir).read(SUMMARY)["studies"]:  # a site of what finished
                    _publish(workspace.root, run_dir, build_site=not no_site,
                             console=display.console)
                raise ProfilerError(incomplete_message(run_dir))
            tracked = track_run(workspace.data, run_dir, plan.settings)
            if confirm:
                tracked = confirm_run(workspace.data, run_dir, plan.settings, tracked,
                                      lambda folder, names: measure_again(folder, names,
                                                                          display.on_event))
            _publish(workspace.root, run_dir, build_site=not no_site, console=display.console)
    _verdict(tracked, display.console, fail_on_regression)


def incomplete_message(run_dir: Path) -> str:
    """One line: which studies did not finish, where the run is kept, how to finish it."""
    from profiler.rundir import SUMMARY, RunDir

    summary = RunDir(run_dir).read(SUMMARY)
    missing = summary["missing"]
    shown = ("the site shows the studies that did, and " if summary["studies"] else "")
    return (f"{', '.join(missing)} did not finish ({next(iter(missing.values()))}); {shown}the "
            f"run is kept in {run_dir}: `profiler build --resume` measures only what is missing")


@cli.command()
@click.argument("before", required=False)
@click.argument("after", required=False)
@click.option("--confirm", is_flag=True,
              help="Re-measure AFTER's suspect studies with more repeats, then judge again.")
@click.option("--fail-on-regression", is_flag=True,
              help=f"Exit {REGRESSION_EXIT} when a metric REGRESSED.")
def compare(before: str | None, after: str | None, confirm: bool,
            fail_on_regression: bool) -> None:
    """Judge run AFTER [latest] against BEFORE [the baseline and the previous run]."""
    from rich.console import Console

    from profiler.build import confirmable, measure_again
    from profiler.config import load_settings
    from profiler.history.tracking import chosen_comparisons, confirm_run
    from profiler.rundir import CONFIG, RunDir

    data, console = Path.cwd() / "data", Console(stderr=True)
    margins = load_settings({}, Path.cwd()).margins
    tracked, run_dir = chosen_comparisons(data, before, after, margins)
    if confirm:  # it measures into the run's folder and rewrites the history: one at a time
        with locked(Path.cwd(), "profiler compare --confirm"):
            settings = confirmable(RunDir(run_dir).read(CONFIG, "settings", "model_source"))
            tracked = confirm_run(data, run_dir, settings, tracked,
                                  lambda folder, names: measure_again(folder, names, _quiet))
    _verdict(tracked, console, fail_on_regression)


@cli.group()
def baseline() -> None:
    """Pin the run later runs are judged against (data/baseline.json, meant to be committed)."""


@baseline.command("set")
@click.argument("run_id", required=False)
def baseline_set(run_id: str | None) -> None:
    """Pin RUN [latest] from the history as the baseline."""
    from profiler.history.tracking import pin_baseline

    with locked(Path.cwd(), "profiler baseline set"):
        click.echo(pin_baseline(Path.cwd() / "data", run_id))


@baseline.command("show")
def baseline_show() -> None:
    """Print the pinned baseline: its run, machine, model and metrics."""
    from profiler.history.tracking import describe_baseline

    click.echo(describe_baseline(Path.cwd() / "data"))


@cli.command()
@click.argument("url")
def restore(url: str) -> None:
    """Fetch the history (and baseline) the site published at URL into data/."""
    from profiler.config import load_settings
    from profiler.history.intake import restore as restore_history

    cap = load_settings({}, Path.cwd()).history_cap
    with locked(Path.cwd(), "profiler restore"):
        click.echo(restore_history(url, Path.cwd() / "data", cap), err=True)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(path_type=Path, file_okay=False, exists=True))
def merge(run_dirs: tuple[Path, ...]) -> None:
    """Bring complete run folders (from other machines or models) into data/ and the history."""
    from profiler.config import load_settings
    from profiler.history.intake import merge as merge_runs

    cap = load_settings({}, Path.cwd()).history_cap
    with locked(Path.cwd(), "profiler merge"):
        added = merge_runs(list(run_dirs), Path.cwd() / "data", cap)
    click.echo(f"merged {len(added)} run(s)" + (f": {', '.join(added)}" if added else
                                                 " (all were already in data/runs)"), err=True)


@cli.command()
def deploy() -> None:
    """Publish the built site/ to the gh-pages branch of origin (mkdocs gh-deploy)."""
    from profiler.report.site import deploy as deploy_site

    with locked(Path.cwd(), "profiler deploy"):  # no build rewrites site/ while it is pushed
        click.echo(deploy_site(Path.cwd()), err=True)


@contextmanager
def locked(root: Path, command: str) -> Iterator[None]:
    """Hold the project's lock for a command that writes; say so if it was taken over."""
    from profiler.lock import project_lock

    with project_lock(root, command) as note:
        if note:
            click.echo(f"note: {note}", err=True)
        yield


def _quiet(event: dict[str, Any]) -> None:
    """Progress events of a re-measurement outside the build display: not shown."""


def _verdict(tracked: Any, console: Any, fail_on_regression: bool) -> None:
    from profiler.display import print_comparisons

    print_comparisons(console, tracked)
    if fail_on_regression and tracked.regressed:
        raise click.exceptions.Exit(REGRESSION_EXIT)


@cli.command()
@click.option("--run", "run_id", help="Run id under data/runs [default: data/latest].")
@click.option("--no-site", is_flag=True, help="Write the pages but skip mkdocs build.")
def render(run_id: str | None, no_site: bool) -> None:
    """Rebuild pages and site from existing results, without running any study."""
    from profiler.report.render import find_run

    root = Path.cwd()
    with locked(root, "profiler render"):
        _publish(root, find_run(root / "data", run_id), build_site=not no_site, console=None)


def _publish(root: Path, run_dir: Path, build_site: bool, console: Any) -> None:
    from rich.console import Console

    from profiler.display import print_summary
    from profiler.report.render import render_pages
    from profiler.report.site import build_site as mkdocs_build
    from profiler.rundir import SUMMARY, RunDir

    render_pages(root, run_dir)
    summary = RunDir(run_dir).read(SUMMARY)
    site = mkdocs_build(root, (summary.get("model") or {}).get("name")) if build_site else None
    print_summary(console or Console(stderr=True), summary, site)


def parse_int(name: str, text: str | None) -> Any:
    """Read an integer flag; leave non-integers for validation to reject by name."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ProfilerError(f"{name} must be a positive integer, got {text!r}") from None


def parse_int_list(text: str) -> list[Any]:
    """Split '8,16,32' into integers; leave anything else for validation to reject by name."""
    values: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(int(part))
        except ValueError:
            raise ProfilerError(f"batch size must be a positive integer, got {part!r}") from None
    return values


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        code = cli.main(standalone_mode=False)  # a click Exit comes back as its code
        if isinstance(code, int) and code:
            sys.exit(code)
    except ProfilerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("error: interrupted; earlier runs untouched, and a build's finished studies "
                   "kept in data/runs/.incomplete (`profiler build --resume` goes on from there)",
                   err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
