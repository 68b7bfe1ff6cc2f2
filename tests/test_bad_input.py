"""Every kind of bad input, one table: the exact one-line error, the exit code, data/ untouched.

Each row sets up one mistake in a project folder whose data/ already holds two earlier runs,
data/latest, a history and a pinned baseline, runs the real `python -m profiler` there, and
checks that stderr is exactly the expected `error: ...` line (the project folder written as
<root>), that the exit code is 1 for a ProfilerError and 2 for a usage error, that nothing
printed a traceback, and that every file, folder and link under data/ is as it was. Every case
fails while the input is checked, before any model is loaded or timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, run_profiler

from profiler.storage import SCHEMA_VERSION, write_json

RUN_A, RUN_B = "20260101T000000Z", "20260102T000000Z"
STUDIES = "batch_size, text_length, memory, leak, stages, optimizations, serving"
EXPERIMENTS = ("fp32, bf16, fp16, torch_int8, onnx, onnx_int8, openvino, static_int8, instances, "
               "threads, max_seq, compile")
REMOTE_CODE = ("error: model custom-model runs custom code (config.json maps its classes to the "
               "model's own code); pass --trust-remote-code if you trust it")

Setup = Callable[[Path], None]


# --- the project every case starts from ------------------------------------------------------


def _record(index: int, run_id: str) -> dict[str, Any]:
    """A history record of an earlier run: two metrics with samples, machine, model, request."""
    return {
        "run_id": run_id, "created": f"2026-01-0{index}T00:00:00+00:00", "commit": None,
        "machine": {"cpu_model": "Test CPU", "logical_cores": 2, "ram_gb": 24.0, "gpu": None,
                    "device": "cpu"},
        "libraries": {"torch": "2.13.0"}, "model": {"name": "tiny", "sha256": "ab" * 32},
        "workload": "bulk",
        "request": {"quick": False, "request_size": None, "corpus_texts": 1000, "texts": 1000},
        "calibration_gflops": [50.0, 50.2, 49.9, 50.1, 50.0, 49.8],
        "metrics": [
            {"name": "bulk_best_texts_per_s", "title": "bulk at its fastest batch size",
             "study": "batch_size", "unit": "texts/s", "direction": "higher",
             "samples": [100.0 + index, 101.0 + index, 99.5 + index, 100.5 + index, 100.2],
             "quantile": 0.5, "calibrated": True},
            {"name": "query_latency_ms_p95", "title": "query latency, p95",
             "study": "batch_size", "unit": "ms", "direction": "lower",
             "samples": [10.0, 10.2, 9.9, 10.1, 10.4, 9.8], "quantile": 0.95,
             "calibrated": True}]}


def _write_run(data: Path, run_id: str) -> None:
    run = data / "runs" / run_id
    write_json(run / "config.json", {"run_id": run_id, "created": run_id, "studies": [],
                                     "settings": {"model": "tiny", "device": "cpu"},
                                     "model_source": {"sha256": "ab" * 32}, "device": "cpu",
                                     "corpus": {"texts": 1000}})
    write_json(run / "system.json", {"cpu_model": "Test CPU", "logical_cores": 2})
    write_json(run / "summary.json", {"run_id": run_id, "created": run_id, "complete": True,
                                      "missing": {}, "model": None, "device": "cpu",
                                      "corpus": {}, "studies": {}, "scalene": {}})


@pytest.fixture
def seeded(project: Path) -> Path:
    """The project folder, with two earlier runs, data/latest, a history and a baseline."""
    data = project / "data"
    for run_id in (RUN_A, RUN_B):
        _write_run(data, run_id)
    (data / "latest").symlink_to(Path("runs") / RUN_B, target_is_directory=True)
    write_json(data / "history.json", {"cap": 200, "runs": [_record(1, RUN_A),
                                                            _record(2, RUN_B)], "removed": []})
    write_json(data / "baseline.json", _record(1, RUN_A))
    return project


def snapshot(data: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `data`: a link's target name, a file's sha256, size and mtime."""
    entries: dict[str, tuple[Any, ...]] = {}

    def walk(folder: Path) -> None:
        with os.scandir(folder) as scan:
            for entry in scan:
                key = os.path.relpath(entry.path, data)
                if entry.is_symlink():
                    entries[key] = ("link", os.readlink(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    entries[key] = ("dir",)
                    walk(Path(entry.path))
                else:
                    body = Path(entry.path).read_bytes()
                    entries[key] = ("file", hashlib.sha256(body).hexdigest(), len(body),
                                    entry.stat(follow_symlinks=False).st_mtime_ns)

    walk(data)
    return entries


def profiler(args: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `profiler` entry point with ARGS, in `cwd`, in this process (no case loads a model)."""
    return run_cli(*args, cwd=cwd)


# --- setups: each changes the seeded project before data/ is snapshotted ---------------------


def put(name: str, body: str | bytes) -> Setup:
    """Write one file (text or bytes) under the project, making its folders."""
    def setup(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8")
    return setup


def folder(name: str) -> Setup:
    def setup(root: Path) -> None:
        (root / name).mkdir(parents=True)
    return setup


def remove(*names: str) -> Setup:
    """Remove files, links or folders of the project (data/ ones included)."""
    def setup(root: Path) -> None:
        for name in names:
            path = root / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            else:
                shutil.rmtree(path)
    return setup


def both(*setups: Setup) -> Setup:
    def setup(root: Path) -> None:
        for one in setups:
            one(root)
    return setup


def nothing(root: Path) -> None:
    """The seeded project as it is."""


def model_dir(name: str, config: dict[str, Any], weights: bool) -> Setup:
    """A model folder: config.json, a sentence-transformers modules.json, maybe fake weights."""
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"}]
    files: dict[str, str | bytes] = {f"{name}/modules.json": json.dumps(modules),
                                     f"{name}/config.json": json.dumps(config)}
    if weights:  # never loaded: the folder must be refused before that
        files[f"{name}/model.safetensors"] = b"not really weights"
    return both(*(put(path, body) for path, body in files.items()))


def run_folder(name: str, *files: str, summary: dict[str, Any] | None = None) -> Setup:
    """A folder outside data/ holding some of a run's files, for `profiler merge`."""
    def setup(root: Path) -> None:
        target = root / name
        target.mkdir(parents=True)
        for file in files:
            write_json(target / file, {"run_id": target.name, "studies": []})
        if summary is not None:
            write_json(target / "summary.json", summary)
    return setup


def build(*args: str) -> tuple[str, ...]:
    """`profiler build` with `args`; --no-site so a case that slipped through builds no site."""
    return ("build", "--no-site", *args)


HISTORY = "<root>/data/history.json"
BASELINE = "<root>/data/baseline.json"
COMPLETE_RUN = {"run_id": "20260103T000000Z", "complete": True, "created": "2026-01-03"}

# (id, setup, command arguments, the exact stderr line, exit code)
CASES: list[tuple[str, Setup, tuple[str, ...], str, int]] = [
    # --- command-line flags --------------------------------------------------------------
    ("flag-study-unknown", nothing, build("--study", "nosuch"),
     f"error: unknown study 'nosuch'; choose from {STUDIES}", 1),
    ("flag-experiment-unknown", nothing, build("--experiment", "bf17"),
     f"error: unknown experiment 'bf17'; choose from {EXPERIMENTS}", 1),
    ("flag-batch-sizes-word", nothing, build("--batch-sizes", "8,x"),
     "error: batch size must be a positive integer, got 'x'", 1),
    ("flag-batch-sizes-zero", nothing, build("--batch-sizes", "0"),
     "error: batch size must be a positive integer, got 0", 1),
    ("flag-request-size-negative", nothing, build("--request-size", "-5"),
     "error: request_size must be a positive integer, got -5", 1),
    ("flag-quality-threshold-above-1", nothing, build("--quality-threshold", "1.5"),
     "error: quality_threshold must be in (0, 1], got 1.5", 1),
    ("flag-quality-threshold-word", nothing, build("--quality-threshold", "high"),
     "error: Invalid value for '--quality-threshold': 'high' is not a valid float.", 2),
    ("flag-device-tpu", nothing, build("--device", "tpu"),
     "error: Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'.",
     2),
    ("flag-workload-nope", nothing, build("--workload", "nope"),
     "error: Invalid value for '--workload': 'nope' is not one of 'bulk', 'stream', 'query'.",
     2),
    ("flag-memory-budget-negative", nothing, build("--memory-budget-mb", "-1"),
     "error: memory_budget_mb must be a number > 0, got -1.0", 1),
    ("flag-token-budget-word", nothing, build("--token-budget", "abc"),
     "error: token budget must be a positive integer, got 'abc'", 1),
    ("flag-slo-ms-zero", nothing, build("--slo-ms", "0"),
     "error: serving.slo_ms must be a number > 0, got 0.0", 1),
    ("flag-slo-percentile-100", nothing, build("--slo-percentile", "100"),
     "error: serving.slo_percentile must be in (0, 100), got 100.0", 1),
    ("flag-target-rps-negative", nothing, build("--target-rps", "-5"),
     "error: serving.target_rps must be a number > 0, got -5.0", 1),
    ("flag-unknown-option", nothing, build("--frobnicate"),
     "error: No such option '--frobnicate'.", 2),
    ("command-unknown", nothing, ("frobnicate",), "error: No such command 'frobnicate'.", 2),
    # --- settings files --------------------------------------------------------------------
    ("config-file-missing", nothing, build("--config", "missing.toml"),
     "error: config file missing.toml does not exist", 1),
    ("config-file-bad-workload", put("ci.toml", "workload = 'warp'\n"),
     build("--config", "ci.toml"),
     "error: unknown workload 'warp'; choose one of bulk, stream, query", 1),
    ("config-file-pyproject-bad-device",
     put("ci/pyproject.toml", "[tool.profiler]\ndevice = 'tpu'\n"),
     build("--config", "ci/pyproject.toml"),
     "error: unknown device 'tpu'; choose one of auto, cpu, cuda, mps", 1),
    ("toml-invalid", put("profiler.toml", "device = = 'cpu'\n"), build(),
     "error: config file <root>/profiler.toml is not valid TOML: Invalid value "
     "(at line 1, column 10)", 1),
    ("toml-unknown-key", put("profiler.toml", "colour = 'blue'\n"), build(),
     "error: unknown setting 'colour'", 1),
    ("toml-batch-sizes-string", put("profiler.toml", "batch_sizes = 'eight'\n"), build(),
     "error: batch_sizes must be a list, got 'eight'", 1),
    ("toml-timing-unknown-key", put("profiler.toml", "[timing]\nrepeats = 3\n"), build(),
     "error: unknown setting 'timing.repeats'", 1),
    ("toml-quick-with-bad-timing",
     put("profiler.toml", "quick = true\n[timing]\nmin_repeats = 0\n"), build(),
     "error: timing.min_repeats must be a positive integer, got 0", 1),
    ("toml-margin-above-1", put("profiler.toml", "[margins]\ndefault = 1.5\n"), build(),
     "error: margins.default must be a fraction in (0, 1), got 1.5", 1),
    ("toml-serving-empty-grid", put("profiler.toml", "[serving]\nmax_batch = []\n"), build(),
     "error: give at least one serving.max_batch value", 1),
    ("toml-serving-search-budget-zero", put("profiler.toml", "[serving]\nsearch_budget_s = 0\n"),
     build(), "error: serving.search_budget_s must be a number > 0, got 0", 1),
    ("toml-serving-no-batcher", put("profiler.toml", "[serving]\nbatchers = []\n"), build(),
     "error: serving.batchers must name at least one batcher", 1),
    ("toml-serving-unknown-batcher", put("profiler.toml", "[serving]\nbatchers = ['lifo']\n"),
     build(), "error: unknown batcher 'lifo'; choose from dynamic, token_budget, sort_window", 1),
    ("toml-serving-token-budget-below-longest-text",
     put("profiler.toml", "[serving]\ntoken_budgets = [8]\n"), build(),
     "error: serving.token_budgets value 8 is smaller than the longest text (65 tokens); "
     "give at least 65", 1),
    ("pyproject-unknown-key", put("pyproject.toml", "[tool.profiler]\nbatch_size = 8\n"),
     build(), "error: unknown setting 'batch_size'", 1),
    ("project-without-mkdocs-yml", remove("mkdocs.yml"), build(),
     "error: <root>/mkdocs.yml not found: run profiler from the project folder (the one with "
     "mkdocs.yml)", 1),
    # --- corpus ------------------------------------------------------------------------------
    ("corpus-missing", nothing, build("--corpus", "missing.txt"),
     "error: corpus missing.txt does not exist", 1),
    ("corpus-empty", put("empty.txt", b""), build("--corpus", "empty.txt"),
     "error: corpus empty.txt has no texts", 1),
    ("corpus-binary", put("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"),
     build("--corpus", "image.txt"), "error: corpus image.txt is not UTF-8 text (byte 0)", 1),
    ("corpus-jsonl-bad-line", put("texts.jsonl", b'{"text": "a"}\n{oops\n'),
     build("--corpus", "texts.jsonl"), "error: corpus texts.jsonl line 2 is not valid JSON", 1),
    ("corpus-jsonl-no-text-field", put("texts.jsonl", b'{"body": "a"}\n'),
     build("--corpus", "texts.jsonl"),
     "error: corpus texts.jsonl line 1 has no string field 'text'", 1),
    ("corpus-csv-no-text-column", put("texts.csv", b"id,body\n1,a\n"),
     build("--corpus", "texts.csv"), "error: corpus texts.csv has no 'text' column", 1),
    ("corpus-unsupported-extension", put("texts.json", b'["a"]'),
     build("--corpus", "texts.json"), "error: corpus texts.json must be .txt, .jsonl or .csv",
     1),
    ("corpus-is-a-folder", folder("texts.txt"), build("--corpus", "texts.txt"),
     "error: corpus texts.txt is a directory, not a file", 1),
    # --- model -------------------------------------------------------------------------------
    ("model-folder-missing", nothing, build("--model", "./no-such-model"),
     "error: model directory ./no-such-model does not exist", 1),
    ("model-without-weights", model_dir("bare-model", {"model_type": "bert"}, weights=False),
     build("--model", "bare-model"), "error: model directory bare-model has no weights "
     "(model.safetensors or pytorch_model.bin)", 1),
    ("model-remote-code-untrusted",
     model_dir("custom-model", {"model_type": "bert", "auto_map": {
         "AutoModel": "modeling_custom.CustomModel"}}, weights=True),
     build("--model", "custom-model"), REMOTE_CODE, 1),
    ("model-hub-id-offline", nothing, build("--model", "nobody-here/no-such-model-3141"),
     "error: model 'nobody-here/no-such-model-3141' is not in the local cache and "
     "HF_HUB_OFFLINE is set; pass a local model directory", 1),
    # --- data/ ---------------------------------------------------------------------------------
    ("history-invalid-json", put("data/history.json", "{oops"), ("compare",),
     f"error: {HISTORY} is not valid JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)", 1),
    ("history-not-a-history",
     put("data/history.json", json.dumps({"schema_version": SCHEMA_VERSION, "runs": "all"})),
     ("compare",), f"error: {HISTORY} is not a run history (no list of runs with metrics)", 1),
    ("baseline-newer-schema", put("data/baseline.json", '{"schema_version": 99}'),
     ("baseline", "show"),
     f"error: {BASELINE} has schema_version 99; this profiler reads up to {SCHEMA_VERSION}", 1),
    ("baseline-missing", remove("data/baseline.json"), ("baseline", "show"),
     f"error: {BASELINE} does not exist: pin one with `profiler baseline set`", 1),
    ("baseline-set-empty-history", remove("data/history.json"), ("baseline", "set"),
     "error: the run history is empty: run `profiler build` first", 1),
    ("compare-unknown-ids", nothing, ("compare", "19990101", "20000101"),
     "error: no run in the history match '19990101'", 1),
    ("compare-ambiguous-prefix", nothing, ("compare", "2026"),
     "error: 2 runs in the history match '2026'", 1),
    ("render-without-latest", remove("data/latest"), ("render", "--no-site"),
     "error: no results for a complete run (data/latest): run `profiler build` first", 1),
    ("render-run-unknown", nothing, ("render", "--no-site", "--run", "NOPE"),
     "error: no results for run NOPE: run `profiler build` first", 1),
    ("render-run-summary-missing", remove(f"data/runs/{RUN_A}/summary.json"),
     ("render", "--no-site", "--run", RUN_A),
     f"error: no results for run {RUN_A}: run `profiler build` first", 1),
    ("render-summary-edited-by-hand", nothing, ("render", "--no-site", "--run", RUN_B),
     f"error: <root>/data/runs/{RUN_B}/summary.json has no 'workload' field: the file is "
     "damaged or was edited by hand", 1),
    ("render-summary-schema-1",
     put(f"data/runs/{RUN_B}/summary.json", '{"schema_version": 1, "run_id": "x"}'),
     ("render", "--no-site"), f"error: <root>/data/runs/{RUN_B}/summary.json has "
     "schema_version 1, from before workloads were measured; rebuild it with `profiler build`",
     1),
    ("resume-with-settings", nothing, build("--resume", "--quick"),
     "error: --resume finishes the incomplete run with the settings it started with: give no "
     "other settings", 1),
    ("resume-nothing-to-resume", nothing, build("--resume"),
     "error: no incomplete run to resume in <root>/data/runs/.incomplete", 1),
    ("flag-memory-limit-zero", nothing, build("--memory-limit-mb", "0"),
     "error: memory_limit_mb must be a number > 0, got 0.0", 1),
    ("merge-folder-not-a-run", put("notes/readme.txt", "not a run\n"), ("merge", "notes"),
     "error: notes is not a complete run: config.json is missing", 1),
    ("merge-summary-missing", run_folder("20260103T000000Z", "config.json", "system.json"),
     ("merge", "20260103T000000Z"),
     "error: 20260103T000000Z is not a complete run: summary.json is missing", 1),
    ("merge-folder-missing", nothing, ("merge", "elsewhere"),
     "error: Invalid value for 'RUN_DIRS...': Directory 'elsewhere' does not exist.", 2),
    ("merge-into-corrupt-history",
     both(run_folder("20260103T000000Z", "config.json", "system.json", summary=COMPLETE_RUN),
          put("data/history.json", "[1, 2")),
     ("merge", "20260103T000000Z"),
     f"error: {HISTORY} is not valid JSON: Expecting ',' delimiter: line 1 column 6 (char 5)",
     1),
]


@pytest.mark.parametrize(("setup", "args", "message", "code"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_one_exact_line_and_leaves_data_alone(
        seeded: Path, setup: Setup, args: tuple[str, ...], message: str, code: int) -> None:
    setup(seeded)
    data = seeded / "data"
    before = snapshot(data)
    assert len(before) >= 10  # runs, their files, latest, history, baseline, corpus
    done = profiler(args, seeded)
    shown = done.stderr.replace(str(seeded.resolve()), "<root>").replace(str(seeded), "<root>")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert shown.splitlines() == [message], shown
    assert shown == message + "\n", repr(shown)  # no blank line, no progress display
    assert done.stdout == "", done.stdout
    assert done.returncode == code, done.stderr
    assert snapshot(data) == before


def test_the_seeded_data_is_usable(seeded: Path) -> None:
    """The seeded history and baseline are valid: the cases fail on their own mistake."""
    before = snapshot(seeded / "data")
    shown = profiler(("baseline", "show"), seeded)
    assert shown.returncode == 0 and f"baseline: run {RUN_A}" in shown.stdout, shown.stderr
    compared = profiler(("compare", RUN_A, RUN_B), seeded)
    assert compared.returncode == 0 and "Traceback" not in compared.stderr, compared.stderr
    assert snapshot(seeded / "data") == before


def test_the_installed_command_gives_the_same_line_in_its_own_process(seeded: Path) -> None:
    """The table runs in-process; one case through `python -m profiler` shows they agree."""
    before = snapshot(seeded / "data")
    done = run_profiler("build", "--no-site", "--study", "nosuch", cwd=seeded)
    assert done.stderr == f"error: unknown study 'nosuch'; choose from {STUDIES}\n", done.stderr
    assert done.returncode == 1 and done.stdout == ""
    assert snapshot(seeded / "data") == before
