"""`profiler build`: validate inputs, run each study in its own process, store, render, publish."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import multiprocessing
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.derive import derive
from profiler.config import Settings
from profiler.corpus import DEFAULT_CORPUS, load_corpus
from profiler.errors import ProfilerError
from profiler.history.store import git_commit
from profiler.measure.stats import summarize
from profiler.model import (
    ModelSource,
    check_remote_code,
    check_token_budget,
    pick_device,
    resolve_model,
    weights_sha256,
)
from profiler.rundir import CALIBRATION, CONFIG, SUMMARY, SYSTEM, TEXTS, RunDir
from profiler.runner.process import (
    EventHandler,
    ScaleneOutcome,
    Zygote,
    finish_profile,
    group_label,
    run_study,
)
from profiler.storage import point_latest, read_json, replace, write_json
from profiler.studies import STUDIES
from profiler.studies.serving import grid_of

INCOMPLETE = ".incomplete"  # data/runs/.incomplete/<id>: runs still being measured, or stopped
CALIBRATION_SIZE = 512
CALIBRATION_REPEATS = 5  # before the studies, and again after them


@dataclass(frozen=True)
class Workspace:
    """The folders a build reads and writes, relative to the project root."""

    root: Path

    @property
    def data(self) -> Path:
        """Results: runs/, latest, the default corpus."""
        return self.root / "data"

    @property
    def runs(self) -> Path:
        """One folder per complete run."""
        return self.data / "runs"

    def check(self) -> None:
        """Refuse to start where there is no project to build into."""
        for needed in ("mkdocs.yml", "templates", "docs"):
            if not (self.root / needed).exists():
                raise ProfilerError(f"{self.root / needed} not found: run profiler from the "
                                    "project folder (the one with mkdocs.yml)")


@dataclass(frozen=True)
class Plan:
    """A validated build: everything checked before any result is written."""

    settings: Settings
    source: ModelSource
    device: str
    corpus_path: Path
    texts: list[str]

    @property
    def studies(self) -> list[str]:
        """The studies to run, in registry order."""
        return [name for name in STUDIES if not self.settings.studies or
                name in self.settings.studies]

    @property
    def groups(self) -> list[list[str]]:
        """Studies per process: one each, or all in one process for a quick build."""
        return [self.studies] if self.settings.quick else [[name] for name in self.studies]


def plan_build(settings: Settings, workspace: Workspace) -> Plan:
    """Check the workspace, corpus, model and device; raise ProfilerError on the first problem."""
    workspace.check()
    corpus = Path(settings.corpus) if settings.corpus else workspace.root / DEFAULT_CORPUS
    texts = load_corpus(corpus, settings.corpus_max_mb, settings.text_max_chars)
    source = resolve_model(settings.model)
    source = dataclasses.replace(source, sha256=source.sha256 or weights_sha256(Path(source.path)))
    plan = Plan(settings, source, pick_device(settings.device), corpus.resolve(), texts)
    check_remote_code(plan.source, settings.trust_remote_code)
    if settings.token_budget is not None:
        check_token_budget(plan.source, texts, settings.token_budget)
    budgets = [params["max_tokens"] for kind, params in grid_of(settings.serving, settings.quick)
               if kind == "token_budget"] if "serving" in plan.studies else []
    if budgets:  # the budgets this build searches (--quick: the first batcher only)
        check_token_budget(plan.source, texts, min(budgets), "serving.token_budgets value")
    for study in plan.studies:
        STUDIES[study].validate(settings, texts)
    return plan


def run_build(plan: Plan, workspace: Workspace, on_event: EventHandler,
              staging: Path | None = None) -> Path:
    """Run the studies not yet done into a staging folder; publish it when all finished.

    Returns data/runs/<id> (also pointed at by data/latest) when every study finished. When a
    study's process died, the others still run and the staging folder is returned as it is:
    an incomplete run (summary.json says what is missing) that `--resume` can finish. An
    interruption leaves the staging folder too; earlier runs and data/latest stay untouched.
    """
    staging = staging or start_run(plan, workspace)
    run = RunDir(staging)
    for name in plan.studies:  # an interrupted process's, unverified
        run.study_path(name, partial=True).unlink(missing_ok=True)
    calibration = _calibration_before(run, plan.device)
    failures: dict[str, str] = {}
    groups = [todo for group in plan.groups
              if (todo := [name for name in group if not run.has_study(name)])]
    # unprofiled studies fork from one process that imported the model stack once
    forks = not plan.settings.scalene and len(groups) > 1
    with Zygote(run.logs / "zygote.log") if forks else contextlib.nullcontext() as zygote:
        for todo in groups:
            failures.update(_run_group(staging, todo, plan.settings.scalene, on_event, zygote))
    run.write(CALIBRATION, {**calibration, "after": (after := calibrate(plan.device)),
                            "gflops": calibration["before"] + after})
    done = [name for name in plan.studies if run.has_study(name)]
    started = time.perf_counter()
    _finish_profiles(staging, done, plan.settings.scalene_html, on_event)
    run.write(SUMMARY, summarize_run(staging, done, time.perf_counter() - started, failures))
    if failures:
        return staging
    run.file(TEXTS).unlink(missing_ok=True)
    final = workspace.runs / staging.name
    try:
        replace(staging, final)
    except OSError as exc:
        raise ProfilerError(f"could not move the run into {final}: {exc.strerror or exc}; it "
                            f"is kept in {staging}") from None
    point_latest(workspace.data, final)
    return final


def start_run(plan: Plan, workspace: Workspace) -> Path:
    """Make data/runs/.incomplete/<id> with the run's config and system description."""
    from profiler.measure.system import system_info

    run_id = new_run_id(workspace.runs)
    staging = workspace.runs / INCOMPLETE / run_id
    staging.mkdir(parents=True)
    RunDir(staging).write(CONFIG, _config_payload(plan, run_id))
    RunDir(staging).write(SYSTEM, system_info(plan.device))
    RunDir(staging).write_texts(plan.texts)
    return staging


def is_complete(run_dir: Path) -> bool:
    """Whether `run_dir` is a finished run (not a staging folder under data/runs/.incomplete)."""
    return run_dir.parent.name != INCOMPLETE


def incomplete_runs(workspace: Workspace) -> list[Path]:
    """Staging folders of runs that did not finish, oldest first."""
    folder = workspace.runs / INCOMPLETE
    return sorted(p for p in folder.iterdir() if RunDir(p).is_run()) if folder.is_dir() else []


def resume_plan(workspace: Workspace) -> tuple[Plan, Path]:
    """The newest incomplete run and its plan, checked to measure the same model and texts."""
    runs = incomplete_runs(workspace)
    if not runs:
        raise ProfilerError(f"no incomplete run to resume in {workspace.runs / INCOMPLETE}")
    staging = runs[-1]
    config = RunDir(staging).read(CONFIG, "settings", "model_source", "corpus_path", "corpus",
                                  "device")
    settings = dataclasses.replace(Settings.from_dict(config["settings"]),
                                   corpus=config["corpus_path"])
    plan = plan_build(settings, workspace)
    recorded = config["model_source"].get("sha256")
    if plan.source.sha256 != recorded or plan.device != config["device"] \
            or len(plan.texts) != config["corpus"].get("texts"):
        raise ProfilerError(f"run {staging.name} measured another model, device or corpus than "
                            "these settings give now; start a new run with `profiler build`")
    return plan, staging


def calibrate(device: str) -> list[float]:
    """A short fp32 matmul: how fast this machine is right now (history's yardstick)."""
    from profiler.measure.peak import measure_peak

    peak = measure_peak(device, "float32", size=CALIBRATION_SIZE, min_time_s=0.1,
                        repeats=CALIBRATION_REPEATS)
    return peak.gflops.samples if peak else []


def confirmable(config: dict[str, Any]) -> Settings:
    """A run's settings for `--confirm`, checked as `build` checks them before loading code.

    A run merged from elsewhere is refused: its model path and settings were chosen on
    another machine.
    """
    if config.get("merged"):
        raise ProfilerError(f"run {config.get('run_id', '?')} was merged from another machine; "
                            "--confirm re-measures only runs built here")
    settings = Settings.from_dict(config["settings"])
    try:
        source = ModelSource(**config["model_source"])
    except TypeError:
        raise ProfilerError(f"run {config.get('run_id', '?')}'s config.json has a damaged "
                            "model_source; it cannot be re-measured") from None
    check_remote_code(source, settings.trust_remote_code)
    return settings


def measure_again(folder: Path, studies: list[str], on_event: EventHandler) -> None:
    """Run `studies` unprofiled into `folder` (holding a config.json): `--confirm`'s repeats."""
    for study in studies:
        try:
            run_study(folder, [study], False, on_event)
        except RuntimeError as exc:
            raise ProfilerError(f"re-measuring {study} failed ({exc}); log: "
                                f"{folder / 'logs'}") from None
        run = RunDir(folder)
        replace(run.study_path(study, partial=True), run.study_path(study))


def new_run_id(runs: Path) -> str:
    """Return a sortable UTC timestamp id not yet used under `runs`."""
    base = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id, n = base, 1
    while (runs / run_id).exists() or (runs / ".incomplete" / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _run_group(staging: Path, studies: list[str], use_scalene: bool,
               on_event: EventHandler, zygote: Zygote | None = None) -> dict[str, str]:
    """Run `studies` in one process; return why each study that did not finish failed."""
    started, run = time.perf_counter(), RunDir(staging)
    try:
        outcome = run_study(staging, studies, use_scalene, on_event, zygote)
    except RuntimeError as exc:
        log = run.logs / f"{group_label(studies)}.log"
        outcome = ScaleneOutcome("failed", f"the study process failed ({exc})")
        failures = {name: f"{exc}; log: {log.relative_to(staging)}" for name in studies
                    if not run.study_path(name, partial=True).is_file()}
        on_event({"event": "failed", "studies": sorted(failures), "reason": str(exc)})
    else:
        failures = {}
    for study in studies:  # those that finished before a crash are kept
        partial = run.study_path(study, partial=True)
        if partial.is_file():
            _update_study(run.study_path(study), read_json(partial),
                          wall_s=time.perf_counter() - started, scalene=outcome.to_dict(),
                          hotspots=None)
            partial.unlink()
    return failures


def _calibration_before(run: RunDir, device: str) -> dict[str, Any]:
    """The machine's speed before the studies: measured now, or kept from a resumed run."""
    if run.has(CALIBRATION):
        return {key: value for key, value in run.read(CALIBRATION).items()
                if key in ("before", "size", "what")}
    calibration = {"before": calibrate(device), "size": CALIBRATION_SIZE,
                   "what": f"fp32 matmul GFLOP/s, {CALIBRATION_REPEATS} before the studies and "
                           f"{CALIBRATION_REPEATS} after"}
    run.write(CALIBRATION, {**calibration, "gflops": calibration["before"]})
    return calibration


def _update_study(path: Path, payload: dict[str, Any], **fields: Any) -> None:
    """Write a study's JSON from `payload` with `fields` set (schema_version is write_json's)."""
    payload.pop("schema_version", None)
    write_json(path, {**payload, **fields})


def _finish_profiles(staging: Path, studies: list[str], html: bool,
                     on_event: EventHandler) -> None:
    """Reduce every raw profile once all timing is done, two at a time."""
    owners: dict[str, list[str]] = {}  # raw profile -> the studies it covers
    outcomes: dict[str, dict[str, Any]] = {}
    run = RunDir(staging)
    for study in studies:
        outcome = run.read_study(study)["scalene"]
        if outcome["profile"] and not outcome["profile"].endswith(".gz"):  # not yet reduced
            owners.setdefault(outcome["profile"], []).append(study)
            outcomes[outcome["profile"]] = outcome
    if not owners:
        return
    on_event({"event": "study", "study": "profiles", "title": "Scalene profiles"})
    on_event({"event": "config", "label": f"hotspots of {len(owners)} profile(s)", "index": 0,
              "total": 1})
    spawn = multiprocessing.get_context("spawn")  # the parent runs a display thread: no fork
    # a Ctrl-C reaches the workers too: they ignore it, and leaving the block ends them
    with spawn.Pool(2, initializer=signal.signal,
                    initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        finished = pool.starmap(finish_profile, [(staging, outcome, html)
                                                 for outcome in outcomes.values()])
    for names, (hotspots, outcome) in zip(owners.values(), finished, strict=True):
        for study in names:
            _update_study(run.study_path(study), run.read_study(study), scalene=outcome,
                          hotspots=hotspots)
    on_event({"event": "done", "label": "hotspots", "summary": f"{len(owners)} profile(s)"})


def _config_payload(plan: Plan, run_id: str) -> dict[str, Any]:
    lengths = summarize([float(len(t)) for t in plan.texts])
    return {
        "run_id": run_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(Path.cwd()),
        "settings": plan.settings.to_dict(),
        "model_source": dataclasses.asdict(plan.source),
        "device": plan.device,
        "corpus_path": str(plan.corpus_path),
        "corpus": {"texts": len(plan.texts), "chars_min": lengths.min,
                   "chars_median": lengths.median, "chars_max": lengths.max},
        "studies": plan.studies,
    }


def seconds_of(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each study's own seconds; studies that shared a process (--quick) add its start once."""
    seconds: dict[str, float | None] = {}
    for name, result in results.items():
        process = result.get("process_s") or {}
        own = process.get("study") if result.get("process_shared_with") else None
        if own is None:  # its own process: the whole of it
            seconds[name] = result.get("wall_s")
            continue
        seconds.setdefault("process start and model load",
                           process.get("startup", 0.0) + process.get("load", 0.0))
        seconds[name] = own
    return seconds


def summarize_run(run_dir: Path, studies: list[str], profiles_s: float = 0.0,
                  missing: dict[str, str] | None = None) -> dict[str, Any]:
    """summary.json's payload: what the run is, how it went, and `derive`'s analysis.

    `missing` names the studies that did not finish, with why: the run is then incomplete.
    """
    run = RunDir(run_dir)
    config = run.read(CONFIG)
    results = {name: run.read_study(name) for name in studies}
    settings = config["settings"]
    return {
        "run_id": config["run_id"], "created": config["created"], "complete": not missing,
        "missing": missing or {},
        "model": next(iter(results.values()))["model"] if results else None,
        "device": config["device"], "corpus": config["corpus"],
        "workload": settings.get("workload", "bulk"),
        "scalene": {name: r["scalene"]["status"] for name, r in results.items()},
        "seconds": {**seconds_of(results), "profiles": profiles_s},
        **derive({name: STUDIES[name].read_from(run, r) for name, r in results.items()},
                 settings),
    }
