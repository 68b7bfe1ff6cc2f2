"""The GitHub Pages workflow: valid for GitHub, clean for actionlint and zizmor, least privilege.

Everything here runs offline. A linter that is not installed skips its test on a developer's
machine and fails it in CI (the env var CI set), where the test extra installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "profile.yml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"@[0-9a-f]{40}\s+#\s*v\d+\.\d+\.\d+\s*$")
TIMEOUT_S = 120


def _tool(name: str) -> str:
    """The path of an installed command-line linter; skip (fail in CI) when there is none."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed (it comes with the test extra: pip install -e '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in loaded:
        loaded["on"] = loaded.pop(True)
    return loaded


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_valid_against_githubs_workflow_schema() -> None:
    done = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                 str(WORKFLOW)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_reports_nothing() -> None:
    done = _run([_tool("actionlint"), "-no-color", str(WORKFLOW)])
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_zizmor_reports_no_findings() -> None:
    zizmor = _tool("zizmor")
    offline = "--offline" if "--offline" in _run([zizmor, "--help"]).stdout \
        else "--no-online-audits"
    done = _run([zizmor, offline, "--no-progress", "--color", "never", str(WORKFLOW)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout + done.stderr, done.stdout + done.stderr


def test_top_level_permissions_read_contents_only(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}


def test_only_publish_may_deploy_pages(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), f"job {name}: permissions must be listed"
        granted = {scope for scope, level in permissions.items() if level == "write"}
        if name == "publish":
            assert granted == {"pages", "id-token"}, f"publish writes {sorted(granted)}"
        else:
            assert not granted, f"job {name} writes {sorted(granted)}"


def test_every_action_is_pinned_to_a_commit(workflow: dict[str, Any]) -> None:
    uses = [step["uses"] for step in _steps(workflow) if "uses" in step]
    assert uses
    for ref in uses:
        if not ref.startswith("./"):
            assert PINNED.match(ref), f"{ref} is not pinned to a full commit SHA"


def test_every_pin_names_its_version() -> None:
    lines = [line for line in WORKFLOW.read_text(encoding="utf-8").splitlines()
             if re.match(r"\s*(-\s+)?uses:", line) and "@" in line]
    assert lines
    for line in lines:
        assert VERSION_COMMENT.search(line), f"no '# vX.Y.Z' after the SHA: {line.strip()}"


def test_no_expression_inside_a_script(workflow: dict[str, Any]) -> None:
    for step in _steps(workflow):
        if "run" in step:
            assert "${{" not in step["run"], f"step {step.get('name')!r} expands ${{{{ }}}}"
            assert "://" not in step["run"], f"step {step.get('name')!r} names an address"


def test_checkouts_keep_no_credentials(workflow: dict[str, Any]) -> None:
    checkouts = [s for s in _steps(workflow) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False


def test_triggers(workflow: dict[str, Any]) -> None:
    on = workflow["on"]
    assert on["push"]["branches"] == ["main"]
    assert on["schedule"] and all("cron" in entry for entry in on["schedule"])
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["model"]["type"] == "string"
    assert inputs["model"]["default"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert inputs["quick"]["type"] == "boolean"
    assert inputs["quick"]["default"] is False


def test_deploys_never_overlap(workflow: dict[str, Any]) -> None:
    concurrency = workflow.get("concurrency") or workflow["jobs"]["publish"].get("concurrency")
    assert concurrency and concurrency.get("group")
    assert concurrency.get("cancel-in-progress") is False


def test_publish_deploys_nothing_when_restore_fails(workflow: dict[str, Any]) -> None:
    # `profiler restore` exits non-zero on anything but a 404 (tests/test_intake.py); the job
    # must then stop before the deploy, or it would publish one run over the whole history.
    steps = workflow["jobs"]["publish"]["steps"]
    names = [step.get("name") for step in steps]
    restore, deploy = names.index("Restore the history"), names.index("Deploy")
    assert restore < deploy
    assert not steps[restore].get("continue-on-error")
    assert "||" not in steps[restore]["run"] and "set +e" not in steps[restore]["run"]
    for step in steps[restore + 1:deploy + 1]:  # a failed step skips these unless they opt in
        condition = str(step.get("if", ""))
        assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", condition), step["name"]
