"""Data from elsewhere passes one gate: hostile histories and run folders, restore's outcomes.

Each attack is built from a valid record or a real run folder with one thing changed, and goes
through the real command line (in-process): one clear line, no traceback, nothing written
outside the project, no markup from the data in any built page, data/ unchanged on failure.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED, copy_build
from helpers import run_cli

from profiler.history.gate import Rejected, checked_record, checked_records
from profiler.storage import SCHEMA_VERSION, write_json

RUN_ID = "20260105T000000Z"
SCRIPT = "<script>alert(1)</script>"


def record(run_id: str = RUN_ID, day: int = 5) -> dict[str, Any]:
    """A valid history record, as `record_of` writes one."""
    return {
        "run_id": run_id, "created": f"2026-01-{day:02d}T00:00:00+00:00", "commit": "ab12cd3",
        "machine": {"cpu_model": "Test CPU", "logical_cores": 2, "ram_gb": 24.0, "gpu": None,
                    "device": "cpu"},
        "libraries": {"torch": "2.13.0+cpu"}, "model": {"name": "tiny", "sha256": "ab" * 32},
        "workload": "bulk",
        "request": {"quick": False, "request_size": None, "corpus_texts": 1000, "texts": 1000},
        "calibration_gflops": [50.0, 50.5],
        "metrics": [{"name": "bulk_best_texts_per_s", "title": "bulk at its fastest batch size",
                     "study": "batch_size", "unit": "texts/s", "direction": "higher",
                     "samples": [100.0, 101.0, 99.0], "quantile": 0.5, "calibrated": True}]}


HOSTILE_RECORDS = json.loads((Path(__file__).parent / "data" / "hostile" / "records.json")
                             .read_text(encoding="utf-8"))["records"]


@pytest.mark.parametrize("hostile", [pytest.param(h, id=h["attack"]) for h in HOSTILE_RECORDS])
def test_the_gate_names_what_is_wrong_with_a_hostile_record(hostile: dict[str, Any]) -> None:
    with pytest.raises(Rejected, match=hostile["reason"]):
        checked_record(hostile["record"])


def test_a_valid_record_passes_as_it_is_and_unknown_fields_stay_behind() -> None:
    assert checked_record(record()) == record()
    assert checked_record({**record(), "injected": SCRIPT}) == record()
    redacted = {**record(), "model": {"name": "<venv>/models/<user>-tiny", "sha256": None}}
    assert checked_record(redacted) == redacted  # the placeholders host details become
    with pytest.raises(Rejected, match="markup"):
        checked_record({**record(), "model": {"name": "<venvx>/tiny", "sha256": None}})


def test_bad_and_duplicate_records_are_dropped_by_name_and_the_rest_kept() -> None:
    bad = record("20260106T000000Z", 6)
    bad["metrics"][0]["title"] = SCRIPT
    kept, dropped = checked_records([record("20260107T000000Z", 7), bad, record(),
                                     record(), "not a record"])
    assert [r["run_id"] for r in kept] == [RUN_ID, "20260107T000000Z"]  # oldest first
    assert dropped == [
        "run 2 (20260106T000000Z): metrics.0.title: holds markup or control characters",
        f"run 4 ({RUN_ID}): a second record of that run",
        "run 5 (no valid run id): the record: Input should be a valid dictionary or instance of "
        "RunRecord"]


# --- restore against a local server ----------------------------------------------------------


class Site(http.server.BaseHTTPRequestHandler):
    """Answers every request as `self.server.answer` says: (status, body, seconds per chunk)."""

    def do_GET(self) -> None:
        status, body, pause = self.server.answer(self.path)  # type: ignore[attr-defined]
        self.server.headers_seen.append(dict(self.headers))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for start in range(0, len(body), 1024):
            self.wfile.write(body[start:start + 1024])
            time.sleep(pause)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def site() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    server.headers_seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def serve(site: Any, history: Any = None, status: int = 200, pause: float = 0.0) -> str:
    """Let the site answer with `history` (a 404 for the baseline) and return its address."""
    body = json.dumps(history).encode() if history is not None else b""

    def answer(path: str) -> tuple[int, bytes, float]:
        if path.endswith("history.json"):
            return status, body, pause
        return 404, b"", 0.0
    site.answer = answer
    return f"http://127.0.0.1:{site.server_address[1]}/"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_restore_keeps_what_passes_names_what_does_not_and_asks_for_a_fresh_copy(
        project: Path, site: Any) -> None:
    hostile = [record("20260106T000000Z", 6), {**record(), "run_id": "../../PWNED"},
               {**record("20260107T000000Z", 7), "created": "x" + SCRIPT}]
    done = run_cli("restore", serve(site, {"runs": hostile}), cwd=project)
    assert done.returncode == 0, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "restored 1 run(s)" in done.stderr and "left out 2" in done.stderr
    assert "run 2 (no valid run id): run_id" in done.stderr
    runs = json.loads((project / "data" / "history.json").read_text())["runs"]
    assert [r["run_id"] for r in runs] == ["20260106T000000Z"]
    assert site.headers_seen[0].get("Cache-Control") == "no-cache"
    assert not list(project.parent.glob("PWNED*")) and not list(project.glob("**/PWNED*"))


@pytest.mark.parametrize(("status", "body", "words"), [
    (503, {"runs": []}, "HTTP 503"),
    (200, "not json {", "not valid JSON"),
    (200, {"runs": "all of them"}, "not a run history"),
])
def test_restore_fails_loudly_unless_there_is_no_history(
        project: Path, site: Any, status: int, body: Any, words: str) -> None:
    write_json(project / "data" / "history.json", {"cap": 200, "runs": [record()],
                                                   "removed": []})
    before = snapshot(project / "data")
    text = (body if isinstance(body, str) else json.dumps(body)).encode()
    url = serve(site)
    site.answer = lambda path: ((status, text, 0.0) if path.endswith("history.json")
                                else (404, b"", 0.0))
    done = run_cli("restore", url, cwd=project)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert snapshot(project / "data") == before


def test_restore_starts_fresh_only_on_404(project: Path, site: Any) -> None:
    done = run_cli("restore", serve(site, status=404), cwd=project)
    assert done.returncode == 0 and "HTTP 404" in done.stderr and "fresh" in done.stderr


def test_restore_gives_up_on_a_trickle_and_an_oversized_body(
        project: Path, site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.history import intake

    monkeypatch.setattr(intake, "DEADLINE_S", 0.5)
    many = {"runs": [record(f"202601{d:02d}T000000Z", d) for d in range(1, 29)]}
    done = run_cli("restore", serve(site, many, pause=0.05), cwd=project)
    assert done.returncode == 1 and "took longer than" in done.stderr, done.stderr
    monkeypatch.setattr(intake, "DEADLINE_S", 60.0)
    monkeypatch.setattr(intake, "MAX_BYTES", 2048)
    done = run_cli("restore", serve(site, many), cwd=project)
    assert done.returncode == 1 and "larger than" in done.stderr, done.stderr
    assert not (project / "data" / "history.json").exists()


@pytest.mark.parametrize("url", ["http://example.org/", "file:///etc/", "ftp://x/", "gh-pages"])
def test_restore_takes_https_or_this_machine_alone(project: Path, url: str) -> None:
    done = run_cli("restore", url, cwd=project)
    assert done.returncode == 1 and "https address" in done.stderr


def test_restore_keeps_history_cap_and_says_what_it_thinned(project: Path, site: Any) -> None:
    (project / "profiler.toml").write_text("history_cap = 20\n", encoding="utf-8")
    runs = [record(f"2025{m:02d}{d:02d}T000000Z", 1) for m in range(1, 13) for d in (1, 15)]
    for run, (m, d) in zip(runs, [(m, d) for m in range(1, 13) for d in (1, 15)], strict=True):
        run["created"] = f"2025-{m:02d}-{d:02d}T00:00:00+00:00"
    done = run_cli("restore", serve(site, {"runs": runs}), cwd=project)
    assert done.returncode == 0, done.stderr
    kept = json.loads((project / "data" / "history.json").read_text())["runs"]
    assert len(kept) <= 20
    assert f"history_cap 20 thinned out {24 - len(kept)} older run(s)" in done.stderr


class _Elements(HTMLParser):
    """Every element of a page with its attributes, and the text inside script elements."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def injected(site_dir: Path) -> list[str]:
    """Elements in any built page that hostile data could have put there."""
    found = []
    for page in site_dir.rglob("*.html"):
        parser = _Elements()
        parser.feed(page.read_text(encoding="utf-8"))
        found += [f"{page.name}: script" for body in parser.scripts if "alert" in body]
        for tag, attrs in parser.elements:
            if tag == "b" or any(name.startswith("on") for name in attrs) or any(
                    (value or "").strip().lower().startswith("javascript:")
                    for value in attrs.values()):
                found.append(f"{page.name}: <{tag} {attrs}>")
    return found


@SHARED
def test_a_hostile_history_reaches_no_page_and_keeps_the_cap(
        bulk_build: Path, tmp_path: Path, site: Any) -> None:
    project = copy_build(bulk_build, tmp_path / "project")
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    valid = []
    for n in range(300):
        created = start + dt.timedelta(hours=12 * n)
        valid.append({**record(created.strftime("%Y%m%dT%H%M%SZ")),
                      "created": created.isoformat(timespec="seconds")})
    hostile = [h["record"] for h in HOSTILE_RECORDS]
    done = run_cli("restore", serve(site, {"runs": valid + hostile}), cwd=project)
    assert done.returncode == 0, done.stderr
    assert f"left out {len(hostile)}" in done.stderr and "history_cap 200 thinned" in done.stderr
    assert len(json.loads((project / "data" / "history.json").read_text())["runs"]) <= 200
    assert run_cli("render", cwd=project).returncode == 0
    assert injected(project / "site") == []
    assert not list(tmp_path.glob("**/PWNED*")) and not list(Path("/tmp").glob("PWNED*"))


# --- merge of hostile run folders ------------------------------------------------------------


@pytest.fixture
def hostile_run(bulk_build: Path, tmp_path: Path) -> Path:
    """A copy of the shared build's run folder, to be made hostile one way at a time."""
    source = (bulk_build / "data" / "latest").resolve()
    target = tmp_path / "upload" / source.name
    copy_build(source, target)
    return target


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@SHARED
def test_merge_copies_no_link_and_takes_no_trust_from_the_folder(
        hostile_run: Path, tiny_project: Path, tmp_path: Path) -> None:
    project = tiny_project
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "s3cret"}')
    (hostile_run / "stolen.json").symlink_to(secret)  # a name no run file has: left behind
    _edit(hostile_run / "config.json", lambda c: c["settings"].update(
        trust_remote_code=True, scalene_html=True, include_host_info=True))
    done = run_cli("merge", str(hostile_run), cwd=project)
    assert done.returncode == 0, done.stderr
    merged = project / "data" / "runs" / hostile_run.name
    assert (merged / "calibration.json").is_file() and not (merged / "stolen.json").exists()
    assert not any(p.is_symlink() for p in merged.rglob("*"))
    config = json.loads((merged / "config.json").read_text())
    settings = config["settings"]
    assert (settings["trust_remote_code"], settings["scalene_html"],
            settings["include_host_info"]) == (False, False, False)
    assert config["merged"] is True  # so --confirm never loads the model path it names
    assert run_cli("render", cwd=project).returncode == 0
    assert "s3cret" not in "".join(p.read_text(errors="ignore")
                                   for p in (project / "site").rglob("*") if p.is_file())


def _link(path: Path, target: Path) -> None:
    """Put a link to `target` (any JSON file on the machine) where a run's file belongs."""
    target.write_text('{"token": "s3cret"}')
    path.unlink()
    path.symlink_to(target)


HOSTILE_FOLDERS = [  # (id, the change to the run folder, words of the one-line error)
    ("config-run-id-outside", lambda run: _edit(run / "config.json", lambda c: c.update(
        run_id="../../PWNED")), "config.json names another run"),
    ("summary-run-id-other", lambda run: _edit(run / "summary.json", lambda s: s.update(
        run_id="20990101T000000Z")), "its summary names no complete run"),
    ("scalene-html-outside", lambda run: _edit(run / "batch_size.json", lambda s: s.update(
        scalene={**s["scalene"], "html": "../../../etc/passwd"})), "outside the run's scalene/"),
    ("created-script", lambda run: _edit(run / "config.json", lambda c: c.update(
        created="2026-01-05T00:00:00+00:00" + SCRIPT)), "created"),
    ("model-name-script", lambda run: _edit(run / "config.json", lambda c: c["settings"].update(
        model="tiny" + SCRIPT)), "markup"),
    ("study-missing", lambda run: (run / "stages.json").unlink(), "stages.json is missing"),
    ("result-field-markup", lambda run: _edit(run / "batch_size.json", lambda s: s["result"][
        "points"][0].update(batch_size=SCRIPT)),
     "batch_size.json does not hold a batch_size result: points.0.batch_size: Input should be "
     "a valid integer"),
    ("result-field-missing", lambda run: _edit(run / "leak.json", lambda s: s["result"].pop(
        "fit")), "leak.json does not hold a leak result: fit: Field required"),
    ("run-file-a-link", lambda run: _link(run / "calibration.json", run.parent / "x.json"),
     "calibration.json is a link"),
]


@SHARED
@pytest.mark.parametrize(("change", "words"),
                         [pytest.param(c, w, id=i) for i, c, w in HOSTILE_FOLDERS])
def test_merge_refuses_a_hostile_folder_in_one_line_and_writes_nothing(
        hostile_run: Path, tiny_project: Path, change: Callable[[Path], None],
        words: str) -> None:
    project = tiny_project
    change(hostile_run)
    before = snapshot(project / "data")
    done = run_cli("merge", str(hostile_run), cwd=project)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert snapshot(project / "data") == before
    assert not list(project.parent.parent.glob("**/PWNED*"))


@SHARED
def test_merge_takes_a_run_of_the_older_readable_schema_and_refuses_an_older_one(
        hostile_run: Path, tiny_project: Path) -> None:
    for path in hostile_run.glob("*.json"):  # as a profiler of schema 2 wrote the run
        _edit(path, lambda d: d.update(schema_version=2))
    _edit(hostile_run / "summary.json", lambda s: [s.pop(k) for k in ("complete", "missing")])
    older = hostile_run.parent / "older" / hostile_run.name
    shutil.copytree(hostile_run, older)
    _edit(older / "summary.json", lambda s: s.update(schema_version=1))
    before = snapshot(tiny_project / "data")
    refused = run_cli("merge", str(older), cwd=tiny_project)
    assert refused.returncode == 1 and refused.stderr == (
        f"error: {older} has schema_version 1; merge reads 2 to {SCHEMA_VERSION}\n")
    assert snapshot(tiny_project / "data") == before
    done = run_cli("merge", str(hostile_run), cwd=tiny_project)
    assert done.returncode == 0, done.stderr
    merged = tiny_project / "data" / "runs" / hostile_run.name
    assert json.loads((merged / "summary.json").read_text())["schema_version"] == 2  # as sent
    assert run_cli("render", "--no-site", "--run", hostile_run.name, cwd=tiny_project
                   ).returncode == 0


@SHARED
def test_render_names_a_study_result_that_does_not_fit_in_one_line(
        bulk_build: Path, tmp_path: Path) -> None:
    project = copy_build(bulk_build, tmp_path / "project")
    run = (project / "data" / "latest").resolve()
    _edit(run / "memory.json", lambda s: s["result"].update(points="all"))
    before = snapshot(project / "data")
    done = run_cli("render", "--no-site", cwd=project)
    assert done.returncode == 1
    assert done.stderr == (f"error: {run / 'memory.json'} does not hold a memory result: points: "
                           "Input should be a valid list\n"), done.stderr
    assert snapshot(project / "data") == before


def test_csv_cells_a_spreadsheet_would_run_are_defused() -> None:
    import csv
    import io

    from profiler.report.downloads import to_csv

    text = to_csv([{"name": '=HYPERLINK("http://x")', "at": "@SUM(A1)", "plus": "+1",
                    "negative": -3, "plain": "fp32"}])
    (row,) = csv.DictReader(io.StringIO(text))
    assert row == {"name": '\'=HYPERLINK("http://x")', "at": "'@SUM(A1)", "plus": "'+1",
                   "negative": "-3", "plain": "fp32"}


@SHARED
@pytest.mark.parametrize(("change", "words"), [
    (lambda c, model: c.update(merged=True), "merged from another machine"),
    (lambda c, model: c["model_source"].update(path=model), "runs custom code"),
], ids=["merged-run", "custom-code"])
def test_confirm_loads_no_model_that_build_would_refuse(
        bulk_build: Path, tmp_path: Path, tiny_model: Path,
        change: Callable[[dict[str, Any], str], None], words: str) -> None:
    project = copy_build(bulk_build, tmp_path / "project")
    custom = shutil.copytree(tiny_model, tmp_path / "custom-model")
    _edit(custom / "config.json", lambda c: c.update(auto_map={"AutoModel": "evil.Model"}))
    run = (project / "data" / "latest").resolve()
    _edit(run / "config.json", lambda c: change(c, str(custom)))
    before = snapshot(project / "data")
    done = run_cli("compare", "--confirm", cwd=project)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert snapshot(project / "data") == before
