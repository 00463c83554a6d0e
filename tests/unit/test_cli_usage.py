"""The top of the command line: --version, usage errors, TARGET routing, the command list.

Through the real entry point in a subprocess, as a user runs it: usage errors are one
``error:`` line on stderr and exit 2, whatever typer raised, never a traceback.
"""

from __future__ import annotations

import subprocess

import pytest

from kubectl_offwake import __version__
from kubectl_offwake.cli import app, route
from kubectl_offwake.cli.commands import COMMANDS
from tests.plugin_cli import plugin_cmd, plugin_env


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(plugin_cmd(*args), capture_output=True, text=True,
                          env=dict(plugin_env(), COLUMNS="100"), timeout=60)


def test_version_flag():
    proc = _run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"kubectl-offwake {__version__}\n"


def test_version_command_starts_with_the_version():
    """(It may say more, such as the collector image, chosen here without a cluster.)"""
    proc = subprocess.run(plugin_cmd("version"), capture_output=True, text=True, timeout=60,
                          env=dict(plugin_env(), OFFWAKE_IMAGE="registry.test/collector:1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"kubectl-offwake {__version__}"


@pytest.mark.parametrize("args, fragment, command", [
    (["--no-such-flag"], "No such option: --no-such-flag", "kubectl offwake trace"),
    (["report"], "Missing argument 'INPUT'", "kubectl offwake report"),
    (["report", "--bogus"], "No such option: --bogus", "kubectl offwake report"),
    (["report", "x.txt", "-o", "pdf"], "Invalid value for '--format'", "kubectl offwake report"),
    (["local", "--pid", "notanumber"], "Invalid value for '--pid'", "kubectl offwake local"),
])
def test_usage_errors_are_one_line_exit_2(args, fragment, command):
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert lines[0].endswith(f"See '{command} --help'."), lines[0]
    assert proc.stdout == ""


def test_no_arguments_prints_help_and_exits_2():
    proc = _run()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Usage: kubectl offwake" in proc.stdout + proc.stderr


def test_help_lists_the_visible_commands_only():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[1] for line in proc.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2}
    assert {c.name for c in COMMANDS if not c.hidden} <= listed
    assert not {c.name for c in COMMANDS if c.hidden} & listed


def test_route_sends_a_bare_target_to_trace():
    assert route(["istio-proxy", "-n", "app"]) == ["trace", "istio-proxy", "-n", "app"]
    assert route(["-n", "app", "istio-proxy"]) == ["trace", "-n", "app", "istio-proxy"]
    assert route(["report", "x"]) == ["report", "x"]
    assert route(["--version"]) == ["--version"]
    assert route([]) == []


def test_the_app_has_exactly_the_listed_commands():
    registered = [c.name for c in app.registered_commands]
    assert registered == [c.name for c in COMMANDS]
    assert {c.name for c in COMMANDS} == {
        "report", "trace", "local", "demo", "setup", "cleanup", "version"}


def test_the_minimum_python_is_pyprojects():
    """entry.MIN_PYTHON guards the single-file plugin; pip reads requires-python."""
    import re
    from pathlib import Path

    from kubectl_offwake.entry import MIN_PYTHON

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    requires = re.findall(r'^requires-python = "([^"]+)"$', pyproject, re.M)
    assert requires == [">=" + ".".join(map(str, MIN_PYTHON))]
