"""Merging run folders from several machines and models, restoring a published history, deploy."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SHARED
from helpers import read_page, run_cli, run_profiler, table_by_header


@pytest.fixture
def built(bulk_build: Path) -> Path:
    """The shared tiny build (every study) and its site; read, never changed."""
    return bulk_build


def fake_run(source: Path, target_root: Path, run_id: str, cpu: str, model: str) -> Path:
    """A copy of a real run as if measured on CPU `cpu` with model `model` at another time."""
    target = target_root / run_id
    shutil.copytree(source, target)
    created = f"2026-0{run_id[-1]}-01T00:00:00+00:00"
    for name, changes in (("summary.json", {"run_id": run_id, "created": created}),
                          ("config.json", {"run_id": run_id, "created": created})):
        data = json.loads((target / name).read_text())
        data.update(changes)
        if name == "config.json":
            data["settings"]["model"] = model
            data["model_source"]["sha256"] = model.encode().hex()[:64].ljust(64, "0")
        (target / name).write_text(json.dumps(data))
    system = json.loads((target / "system.json").read_text())
    system["cpu_model"] = cpu
    (target / "system.json").write_text(json.dumps(system))
    return target


@pytest.fixture
def runs(built: Path, tmp_path: Path) -> list[Path]:
    """Three run folders: two machines, two models."""
    source = (built / "data" / "latest").resolve()
    return [fake_run(source, tmp_path / "artifacts", f"20260{i}01T000000Z-{i}", cpu, model)
            for i, (cpu, model) in enumerate([("Laptop CPU", "model-a"),
                                              ("Laptop CPU", "model-b"),
                                              ("Runner CPU", "model-a")], start=1)]


@SHARED
def test_merge_brings_every_pair_onto_the_matrix_page(tiny_project: Path,
                                                      runs: list[Path]) -> None:
    done = run_cli("merge", *map(str, runs), cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    assert "merged 3 run(s)" in done.stderr
    data = tiny_project / "data"
    history = json.loads((data / "history.json").read_text())["runs"]
    assert [r["run_id"] for r in history] == [r.name for r in runs]
    assert (data / "latest").resolve().name == runs[-1].name
    before = (data / "history.json").read_bytes()
    again = run_cli("merge", *map(str, runs), cwd=tiny_project)  # idempotent
    assert again.returncode == 0 and "merged 0 run(s)" in again.stderr
    assert (data / "history.json").read_bytes() == before

    assert run_cli("render", cwd=tiny_project).returncode == 0
    page = read_page(tiny_project / "site" / "report" / "matrix" / "index.html")
    rows = table_by_header(page, "Model", "Machine")
    pairs = {(r["Model"].split(" [")[0], r["Machine"].split(" (")[0]) for r in rows}
    assert pairs == {("model-a", "Laptop CPU"), ("model-b", "Laptop CPU"),
                     ("model-a", "Runner CPU")}
    assert len(page.specs) >= 3  # a chart per metric, a line per pair
    lines = {row["pair"] for row in page.specs[0]["data"]["values"]}
    assert len(lines) == 3


@SHARED
def test_merge_refuses_bad_folders_without_touching_data(tiny_project: Path,
                                                         runs: list[Path]) -> None:
    data = tiny_project / "data"
    broken = runs[1]
    (broken / "summary.json").unlink()
    twin = runs[0].parent / "copy" / runs[0].name
    shutil.copytree(runs[0], twin)
    future = runs[2]
    summary = json.loads((future / "summary.json").read_text())
    (future / "summary.json").write_text(json.dumps({**summary, "schema_version": 99}))
    for args, message in (([runs[0], broken], f"{broken} is not a complete run"),
                          ([runs[0], twin], f"{twin} is another copy of run {runs[0].name}"),
                          ([future], f"{future} has schema_version 99")):
        done = run_cli("merge", *map(str, args), cwd=tiny_project)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().startswith(f"error: {message}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (data / "runs").exists() and not (data / "history.json").exists()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over an empty folder: put a site in it to publish it."""
    root = tmp_path / "published"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()


@SHARED
def test_restore_takes_the_history_from_the_published_site(built: Path, tiny_project: Path,
                                                           server: tuple[str, Path]) -> None:
    url, root = server
    shutil.copytree(built / "site", root, dirs_exist_ok=True)
    published = json.loads((root / "report" / "files" / "history.json").read_text())["runs"]
    assert published
    done = run_cli("restore", url, cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    assert f"restored {len(published)} run(s)" in done.stderr
    restored = json.loads((tiny_project / "data" / "history.json").read_text())["runs"]
    assert [r["run_id"] for r in restored] == [r["run_id"] for r in published]


def test_restore_of_a_site_without_a_history_starts_fresh_and_says_so(
        tiny_project: Path, server: tuple[str, Path]) -> None:
    url, _ = server  # nothing published there yet: every file is a 404
    done = run_cli("restore", url, cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    assert "starting a fresh history" in done.stderr and "HTTP 404" in done.stderr
    assert not (tiny_project / "data" / "history.json").exists()
    note = json.loads((tiny_project / "data" / "restore.json").read_text())
    assert note["status"] == "fresh"


def test_restore_refuses_an_address_that_is_not_a_site(tiny_project: Path) -> None:
    done = run_cli("restore", "gh-pages", cwd=tiny_project)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: restore needs the published site's https address, "
                                   "got 'gh-pages'")


@SHARED
def test_deploy_pushes_the_site_to_gh_pages(built: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git = functools.partial(subprocess.run, check=True, capture_output=True, text=True)
    git(["git", "init", "--bare", "-q", str(remote)])
    project = tmp_path / "project"
    shutil.copytree(built, project, symlinks=True)
    env_args = ["-c", "user.name=CI", "-c", "user.email=ci@example.invalid"]
    git(["git", "init", "-q"], cwd=project)
    git(["git", *env_args, "commit", "-q", "--allow-empty", "-m", "start"], cwd=project)
    git(["git", "remote", "add", "origin", str(remote)], cwd=project)
    done = run_profiler("deploy", cwd=project, env={"GIT_AUTHOR_NAME": "CI",
                                                    "GIT_AUTHOR_EMAIL": "ci@example.invalid",
                                                    "GIT_COMMITTER_NAME": "CI",
                                                    "GIT_COMMITTER_EMAIL": "ci@example.invalid"})
    assert done.returncode == 0, done.stderr
    files = git(["git", "ls-tree", "-r", "--name-only", "gh-pages"], cwd=remote).stdout.split()
    assert "index.html" in files and "report/files/history.json" in files
