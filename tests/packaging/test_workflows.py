"""The GitHub workflows (.github/workflows) against GitHub's workflow schema, offline.

They only run on a hosting service, so this is what checks them here: check-jsonschema's
vendored copy of the schema (no network: every proxy points at a closed port), plus what
each workflow must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from install_helpers import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def check(*paths: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is not installed (the dev extra has it)"
    offline = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
                   https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    return subprocess.run([tool, "--builtin-schema", "vendor.github-workflows",
                           *map(str, paths)], capture_output=True, text=True, env=offline,
                          timeout=120)


def test_workflows_match_githubs_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "release.yml"]
    done = check(*files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_workflow_is_refused(tmp_path):
    text = (WORKFLOWS / "ci.yml").read_text()
    assert "timeout-minutes: 90" in text
    path = tmp_path / "broken.yml"
    path.write_text(text.replace("timeout-minutes: 90", "timeout-minutes: ninety"))
    done = check(path)
    assert done.returncode == 1 and "timeout-minutes" in done.stdout, done.stdout + done.stderr


def _steps(workflow: str) -> str:
    data = yaml.safe_load((WORKFLOWS / workflow).read_text())
    return "\n".join(step.get("run", "") for job in data["jobs"].values()
                     for step in job["steps"])


def test_ci_runs_the_ci_script():
    assert "bash .ci/run" in _steps("ci.yml")


@pytest.mark.parametrize("command", [
    "release/build --out dist", "--download-url", "image/build --push",
    "default_image()", "gh release create",
])
def test_release_builds_and_publishes_everything(command):
    assert command in _steps("release.yml")
    data = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    assert data[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as true
