"""Bad input to the real `profiler` command: one line on stderr, non-zero exit, data/ untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, run_profiler

RUN_ID = "20250101T000000Z"
OLD = 1_600_000_000  # an mtime in the past, so any rewrite shows


def profiler(args: list[str], cwd: Path, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """The `profiler` entry point with ARGS in `cwd`, in this process: no case loads a model."""
    return run_cli(*args, cwd=cwd, env={"NO_COLOR": "1", **(env or {})})


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under `root`: kind, mtime (ns), and bytes or link target; links not followed."""
    entries: dict[str, Any] = {}

    def walk(folder: Path) -> None:
        with os.scandir(folder) as scan:
            for entry in scan:
                path = Path(entry.path)
                info = entry.stat(follow_symlinks=False)
                key = str(path.relative_to(root))
                if entry.is_symlink():
                    entries[key] = ("link", os.readlink(path), info.st_mtime_ns)
                elif entry.is_dir(follow_symlinks=False):
                    entries[key] = ("dir", info.st_mtime_ns)
                    walk(path)
                else:
                    entries[key] = ("file", path.read_bytes(), info.st_mtime_ns)

    walk(root)
    return entries


@pytest.fixture
def existing_run(project: Path) -> Path:
    """A complete earlier run in data/runs/<id>, with data/latest pointing at it."""
    run = project / "data" / "runs" / RUN_ID
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "schema_version": 1, "run_id": RUN_ID, "created": "2025-01-01T00:00:00+00:00",
        "complete": True, "model": None, "device": "cpu", "corpus": {}, "studies": {},
        "scalene": {}}, indent=2) + "\n", encoding="utf-8")
    (run / "config.json").write_text('{"schema_version": 1, "run_id": "' + RUN_ID + '"}\n',
                                     encoding="utf-8")
    (project / "data" / "latest").symlink_to(Path("runs") / RUN_ID, target_is_directory=True)
    for path in (run / "summary.json", run / "config.json", run, run.parent):
        os.utime(path, (OLD, OLD))
    os.utime(project / "data" / "latest", (OLD, OLD), follow_symlinks=False)
    return run


def assert_one_error_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: "), line
    assert done.stdout.strip() == "", done.stdout
    for needle in needles:
        assert needle.lower() in line.lower(), line
    return line


def _weightless_model(root: Path) -> str:
    folder = root / "model-without-weights"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (folder / "modules.json").write_text("[]", encoding="utf-8")
    return str(folder)


def _corpus(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        (root / name).write_bytes(data)
        return ["--corpus", name]
    return make


def _toml(text: str) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        (root / "profiler.toml").write_text(text, encoding="utf-8")
        return []
    return make


# (id, how to make the arguments in the project folder, extra env, words the message must have)
CASES: list[tuple[str, Callable[[Path], list[str]], dict[str, str], tuple[str, ...]]] = [
    ("model-missing-path", lambda r: ["--model", "nonexistent/dir/path"], {},
     ("nonexistent/dir/path", "does not exist")),
    ("model-missing-relative", lambda r: ["--model", "./no-such-model"], {},
     ("no-such-model", "does not exist")),
    ("model-without-weights", lambda r: ["--model", _weightless_model(r)], {},
     ("no weights",)),
    ("model-unknown-hub-id", lambda r: ["--model", "nobody-here/no-such-model-3141"],
     {"HF_HUB_OFFLINE": "1"}, ("nobody-here/no-such-model-3141",)),
    ("corpus-missing", lambda r: ["--corpus", "missing.txt"], {}, ("missing.txt",)),
    ("corpus-empty", _corpus("empty.txt", b""), {}, ("no texts",)),
    ("corpus-blank", _corpus("blank.txt", b"\n  \n\t\n"), {}, ("no texts",)),
    ("corpus-undecodable", _corpus("bad.txt", b"fine\n\xff\xfe\x80 not utf-8\n"), {},
     ("utf-8",)),
    ("corpus-bad-extension", _corpus("texts.json", b'["a"]'), {}, ("texts.json",)),
    ("batch-zero", lambda r: ["--batch-sizes", "0"], {}, ("batch size", "0")),
    ("batch-negative", lambda r: ["--batch-sizes", "-4"], {}, ("batch size", "-4")),
    ("batch-word", lambda r: ["--batch-sizes", "abc"], {}, ("batch size", "abc")),
    ("batch-partly-word", lambda r: ["--batch-sizes", "8,x"], {}, ("batch size", "x")),
    ("batch-empty-item", lambda r: ["--batch-sizes", "8,,16"], {}, ("batch size",)),
    ("device-tpu", lambda r: ["--device", "tpu"], {}, ("tpu",)),
    ("study-unknown", lambda r: ["--study", "nosuch"], {}, ("nosuch",)),
    ("toml-batch-zero", _toml("batch_sizes = [0]\n"), {}, ("batch size",)),
    ("toml-unknown-key", _toml("colour = 'blue'\n"), {}, ("colour",)),
    ("toml-invalid", _toml("device = = 'cpu'\n"), {}, ("toml",)),
    ("config-missing", lambda r: ["--config", "nope.toml"], {}, ("nope.toml",)),
    ("workload-unknown", lambda r: ["--workload", "warp"], {}, ("warp",)),
    ("request-size-zero", lambda r: ["--request-size", "0"], {}, ("request_size", "0")),
    ("request-size-word", lambda r: ["--request-size", "abc"], {}, ("request size", "abc")),
    ("token-budget-word", lambda r: ["--token-budget", "many"], {}, ("token budget", "many")),
    ("toml-workload-nope", _toml('workload = "nope"\n'), {}, ("workload", "nope")),
    ("toml-request-size-negative", _toml("request_size = -5\n"), {}, ("request_size", "-5")),
    ("memory-budget-zero", lambda r: ["--memory-budget-mb", "0"], {}, ("memory_budget_mb",)),
    ("toml-trust-remote-code-word", _toml('trust_remote_code = "yes"\n'), {},
     ("trust_remote_code",)),
    ("toml-scalene-html-word", _toml('scalene_html = "yes"\n'), {}, ("scalene_html", "yes")),
    ("unknown-option", lambda r: ["--frobnicate"], {}, ("frobnicate",)),
]


@pytest.mark.parametrize(("make_args", "env", "needles"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_build_rejects_bad_input(existing_run: Path, project: Path,
                                 make_args: Callable[[Path], list[str]], env: dict[str, str],
                                 needles: tuple[str, ...]) -> None:
    args = make_args(project)
    before = snapshot(project / "data")
    done = profiler(["build", "--no-site", *args], project, env)
    assert_one_error_line(done, *needles)
    assert snapshot(project / "data") == before
    assert (project / "data" / "latest").resolve() == existing_run.resolve()


def _with_custom_code(tiny_model: Path, root: Path, change: str) -> str:
    """A copy of the tiny model that asks to run its own code, one way or the other."""
    folder = root / "custom-model"
    shutil.copytree(tiny_model, folder)
    if change == "auto_map":
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
        (folder / "config.json").write_text(json.dumps(config))
    else:
        modules = json.loads((folder / "modules.json").read_text())
        modules[-1]["type"] = "custom_pooling.Pooling"
        (folder / "modules.json").write_text(json.dumps(modules))
    return str(folder)


@pytest.mark.parametrize("change", ["auto_map", "modules_json"])
def test_build_refuses_custom_code_unless_trusted(existing_run: Path, project: Path,
                                                  tiny_model: Path, change: str) -> None:
    model = _with_custom_code(tiny_model, project, change)
    before = snapshot(project / "data")
    done = profiler(["build", "--no-site", "--model", model], project)
    assert_one_error_line(done, "custom code", "--trust-remote-code")
    assert snapshot(project / "data") == before


def test_build_rejects_a_token_budget_below_the_longest_text(existing_run: Path, project: Path,
                                                             tiny_model: Path) -> None:
    (project / "texts.txt").write_text("the river rose\na new law was passed\n",
                                       encoding="utf-8")
    before = snapshot(project / "data")
    done = profiler(["build", "--no-site", "--model", str(tiny_model), "--corpus", "texts.txt",
                     "--token-budget", "3"], project)
    # [CLS] a new law was passed [SEP]: 7 tokens
    assert_one_error_line(done, "token_budget 3", "longest text (7 tokens)", "at least 7")
    assert snapshot(project / "data") == before


def test_build_rejects_cuda_without_a_gpu(existing_run: Path, project: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda would start a real build")
    before = snapshot(project / "data")
    done = profiler(["build", "--no-site", "--device", "cuda"], project)
    assert_one_error_line(done, "cuda")
    assert snapshot(project / "data") == before


def test_build_rejects_non_number_recommend_within(existing_run: Path, project: Path) -> None:
    (project / "profiler.toml").write_text('recommend_within = "five"\n', encoding="utf-8")
    before = snapshot(project / "data")
    done = profiler(["build", "--no-site"], project)
    assert_one_error_line(done, "recommend_within")
    assert snapshot(project / "data") == before


def test_render_without_runs(project: Path) -> None:
    before = snapshot(project / "data")
    done = profiler(["render", "--no-site"], project)
    assert_one_error_line(done, "profiler build")
    assert snapshot(project / "data") == before
    assert not (project / "docs" / "report").exists()


def test_render_unknown_run_id(existing_run: Path, project: Path) -> None:
    before = snapshot(project / "data")
    done = profiler(["render", "--no-site", "--run", "19990101T000000Z"], project)
    assert_one_error_line(done, "19990101T000000Z")
    assert snapshot(project / "data") == before


def test_help_exits_zero(project: Path) -> None:
    done = run_profiler("--help", cwd=project)  # the installed command, in its own process
    assert done.returncode == 0, done.stderr
    assert "build" in done.stdout
    assert "render" in done.stdout
    assert "Traceback" not in done.stderr
