"""Helpers and session fixtures for tests/packaging: what a user installs, installed the way
a user does, once per session.

``installed``: a fresh virtual environment with ``pip install <repo>`` (non-editable, today's
dependency versions from the package index). ``release``: everything ``release/build`` makes
(wheel, sdist, the single-file plugin, the krew archive and manifest). ``only_on_path``
builds a PATH holding just the named programs, so a test sees what a clean machine sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

#: A recording for `report`: BCC offwaketime -f output with six wake paths.
FIXTURE = REPO / "tests" / "data" / "offwaketime" / "folded.txt"


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 600)
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def clean_env(path: str, home: Path, kubeconfig: Optional[Path] = None) -> Dict[str, str]:
    """The machine's environment minus anything that would let this checkout leak in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "KUBECONFIG")
           and not k.startswith(("PYENV_", "PIPX_"))}
    env.update(PATH=path, HOME=str(home), SHIV_ROOT=str(home / ".shiv"), COLUMNS="100",
               NO_COLOR="1")
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def only_on_path(directory: Path, **programs: str) -> Path:
    """A directory of symlinks named as given (``python3=/usr/bin/python3``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, target in programs.items():
        (directory / name).symlink_to(target)
    return directory


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is not on PATH (the packaging tests run the plugin through it)"
    return found


@dataclass
class Installed:
    venv: Path
    home: Path
    tools: Path  # kubectl alone

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, kubeconfig: Optional[Path] = None) -> Dict[str, str]:
        """PATH: the venv's bin, kubectl, and nothing else."""
        return clean_env(f"{self.bin}{os.pathsep}{self.tools}", self.home, kubeconfig)


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("clean-install")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", str(REPO)],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    home = base / "home"
    home.mkdir()
    yield Installed(venv, home, only_on_path(base / "tools", kubectl=kubectl()))


@dataclass
class Release:
    out: Path

    def one(self, pattern: str) -> Path:
        found = sorted(self.out.glob(pattern))
        assert len(found) == 1, (pattern, found)
        return found[0]


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Release:
    out = tmp_path_factory.mktemp("release")
    run([sys.executable, str(REPO / "release" / "build"), "--out", str(out)],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return Release(out)
