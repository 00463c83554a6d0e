"""image/build's errors: one sentence, the right exit status, no traceback, nothing built."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from conftest import BUILD


def _build(*args: str, env=None, user=None) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(BUILD), *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def _one_sentence(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("image/build: ")
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_reference_without_a_registry_is_bad_usage():
    proc = _build("--push", "offwake-collector:dev")
    assert proc.returncode == 2
    assert "names no registry" in _one_sentence(proc)


def test_a_missing_tool_is_named_with_its_package(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    proc = _build("--push", "127.0.0.1:5000/offwake-collector:dev", env=env)
    assert proc.returncode == 2
    assert "skopeo is not installed; install it with 'apt-get install skopeo'" in \
        _one_sentence(proc)


def test_an_unreachable_registry_fails_before_building():
    port = _closed_port()
    proc = _build("--push", f"127.0.0.1:{port}/offwake-collector:dev")
    assert proc.returncode == 1
    assert f"cannot reach a registry at 127.0.0.1:{port}" in _one_sentence(proc)
    assert not proc.stdout


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run image/build as nobody")
def test_building_needs_root(tmp_path):
    os.chmod(tmp_path, 0o777)
    proc = _build("--no-cache", "--cache-dir", str(tmp_path / "cache"), user="65534")
    assert proc.returncode == 2
    assert "needs root" in _one_sentence(proc)
