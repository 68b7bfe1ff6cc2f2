"""`profiler build`: validate inputs, run each study in its own process, store, render, publish."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.bottlenecks import find_bottlenecks, find_context
from profiler.analysis.history import git_commit
from profiler.analysis.targets import check_targets
from profiler.config import Settings
from profiler.corpus import DEFAULT_CORPUS, load_corpus
from profiler.errors import ProfilerError
from profiler.measure.stats import summarize
from profiler.model import (
    ModelSource,
    check_remote_code,
    check_token_budget,
    pick_device,
    resolve_model,
    weights_sha256,
)
from profiler.scalene import EventHandler, finish_profile, group_label, run_study
from profiler.storage import point_latest, read_json, write_json
from profiler.studies import STUDIES

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
    texts = load_corpus(corpus)
    source = resolve_model(settings.model)
    source = dataclasses.replace(source, sha256=source.sha256 or weights_sha256(Path(source.path)))
    plan = Plan(settings, source, pick_device(settings.device), corpus.resolve(), texts)
    check_remote_code(plan.source, settings.trust_remote_code)
    if settings.token_budget is not None:
        check_token_budget(plan.source, texts, settings.token_budget)
    for study in plan.studies:
        STUDIES[study].validate(settings, texts)
    return plan


def run_build(plan: Plan, workspace: Workspace, on_event: EventHandler) -> Path:
    """Run every study into a staging folder, then publish it as data/runs/<id> and data/latest."""
    run_id = new_run_id(workspace.runs)
    staging = workspace.runs / ".incomplete" / run_id
    staging.mkdir(parents=True)
    write_json(staging / "config.json", _config_payload(plan, run_id))
    from profiler.measure.system import system_info

    write_json(staging / "system.json", system_info(plan.device))
    start = calibrate(plan.device)
    for group in plan.groups:
        _run_group(staging, group, plan.settings.scalene, on_event)
    write_json(staging / "calibration.json",
               {"gflops": start + calibrate(plan.device), "size": CALIBRATION_SIZE,
                "what": f"fp32 matmul GFLOP/s, {CALIBRATION_REPEATS} before the studies and "
                        f"{CALIBRATION_REPEATS} after"})
    started = time.perf_counter()
    _finish_profiles(staging, plan.studies, plan.settings.scalene_html, on_event)
    write_json(staging / "summary.json",
               summarize_run(staging, plan.studies, time.perf_counter() - started))
    final = workspace.runs / run_id
    os.replace(staging, final)
    point_latest(workspace.data, final)
    return final


def calibrate(device: str) -> list[float]:
    """A short fp32 matmul: how fast this machine is right now (history's yardstick)."""
    from profiler.measure.peak import measure_peak

    peak = measure_peak(device, "float32", size=CALIBRATION_SIZE, min_time_s=0.1,
                        repeats=CALIBRATION_REPEATS)
    return peak.gflops.samples if peak else []


def measure_again(folder: Path, studies: list[str], on_event: EventHandler) -> None:
    """Run `studies` unprofiled into `folder` (holding a config.json): `--confirm`'s repeats."""
    for study in studies:
        try:
            run_study(folder, [study], False, on_event)
        except RuntimeError as exc:
            raise ProfilerError(f"re-measuring {study} failed ({exc}); log: "
                                f"{folder / 'logs'}") from None
        os.replace(folder / f"{study}.partial.json", folder / f"{study}.json")


def new_run_id(runs: Path) -> str:
    """Return a sortable UTC timestamp id not yet used under `runs`."""
    base = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id, n = base, 1
    while (runs / run_id).exists() or (runs / ".incomplete" / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _run_group(staging: Path, studies: list[str], use_scalene: bool,
               on_event: EventHandler) -> None:
    started = time.perf_counter()
    try:
        outcome = run_study(staging, studies, use_scalene, on_event)
    except RuntimeError as exc:
        log = staging / "logs" / f"{group_label(studies)}.log"
        raise ProfilerError(f"study {','.join(studies)} failed ({exc}); log: {log}") from None
    for study in studies:
        partial = staging / f"{study}.partial.json"
        _update_study(staging / f"{study}.json", read_json(partial),
                      wall_s=time.perf_counter() - started, scalene=outcome.to_dict(),
                      hotspots=None)
        partial.unlink()


def _update_study(path: Path, payload: dict[str, Any], **fields: Any) -> None:
    """Write a study's JSON from `payload` with `fields` set (schema_version is write_json's)."""
    payload.pop("schema_version", None)
    write_json(path, {**payload, **fields})


def _finish_profiles(staging: Path, studies: list[str], html: bool,
                     on_event: EventHandler) -> None:
    """Reduce every raw profile once all timing is done, two at a time."""
    owners: dict[str, list[str]] = {}  # raw profile -> the studies it covers
    outcomes: dict[str, dict[str, Any]] = {}
    for study in studies:
        outcome = read_json(staging / f"{study}.json")["scalene"]
        if outcome["profile"]:
            owners.setdefault(outcome["profile"], []).append(study)
            outcomes[outcome["profile"]] = outcome
    if not owners:
        return
    on_event({"event": "study", "study": "profiles", "title": "Scalene profiles"})
    on_event({"event": "config", "label": f"hotspots of {len(owners)} profile(s)", "index": 0,
              "total": 1})
    spawn = multiprocessing.get_context("spawn")  # the parent runs a display thread: no fork
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        finished = list(pool.map(finish_profile, [staging] * len(owners),
                                 list(outcomes.values()), [html] * len(owners)))
    for names, (hotspots, outcome) in zip(owners.values(), finished, strict=True):
        for study in names:
            path = staging / f"{study}.json"
            _update_study(path, read_json(path), scalene=outcome, hotspots=hotspots)
    on_event({"event": "done", "label": "hotspots", "summary": f"{len(owners)} profile(s)"})


def _config_payload(plan: Plan, run_id: str) -> dict[str, Any]:
    lengths = summarize([float(len(t)) for t in plan.texts])
    return {
        "run_id": run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(Path.cwd()),
        "settings": plan.settings.to_dict(),
        "model_source": dataclasses.asdict(plan.source),
        "device": plan.device,
        "corpus_path": str(plan.corpus_path),
        "corpus": {"texts": len(plan.texts), "chars_min": lengths.min,
                   "chars_median": lengths.median, "chars_max": lengths.max},
        "studies": plan.studies,
    }


def summarize_run(run_dir: Path, studies: list[str], profiles_s: float = 0.0) -> dict[str, Any]:
    """Collect each study's headline figures into summary.json's payload."""
    config = read_json(run_dir / "config.json")
    results = {name: read_json(run_dir / f"{name}.json") for name in studies}
    measured = {name: r["result"] for name, r in results.items()}
    model = next(iter(results.values()))["model"] if results else None
    settings = config["settings"]
    budget = float(settings.get("memory_budget_mb", 2048.0))
    headlines = {name: STUDIES[name].headline(result) for name, result in measured.items()}
    return {
        "run_id": config["run_id"], "created": config["created"], "complete": True,
        "model": model, "device": config["device"], "corpus": config["corpus"],
        "workload": settings.get("workload", "bulk"), "memory_budget_mb": budget,
        "studies": headlines,
        "scalene": {name: r["scalene"]["status"] for name, r in results.items()},
        "seconds": {**{name: r.get("wall_s") for name, r in results.items()},
                    "profiles": profiles_s},
        "targets": [t.to_dict() for t in check_targets(headlines,
                                                       settings.get("targets") or {})],
        "bottlenecks": [b.to_dict() for b in find_bottlenecks(measured, budget)],
        "context": [c.to_dict() for c in find_context(measured, budget)],
        **advice(measured),
    }


def advice(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Recommendations for the chosen workload from the experiments and the batch-size study."""
    from profiler.analysis.recommendations import not_recommended, recommend

    found = recommend(results.get("optimizations"), results.get("batch_size"))
    left_out = not_recommended(results["optimizations"]) if "optimizations" in results else []
    return {"recommendations": [r.to_dict() for r in found], "not_recommended": left_out}
