"""The install commands of README.md and docs/, run as written (tests/docs/docrules.py, group
``install``): each in a fresh virtual environment (pip) or pipx home, from a copy of the
checkout's tracked files that also holds what ``release/build`` made (so ``pip install
kubectl_offwake-<version>-py3-none-any.whl`` finds the release's wheel). Each must leave a
``kubectl-offwake`` that prints this version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docs.docrules import PLACEHOLDERS, Part, assert_ran, parts_of, run_part
from docs.reposcan import tracked
from install_helpers import REPO, Release, clean_env, run

from kubectl_offwake import __version__

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, release: Release) -> Path:
    """What a user has in front of them: the project's files and a release's artifacts."""
    root = tmp_path_factory.mktemp("checkout")
    for path in tracked():
        source = REPO / path
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    for artifact in release.out.iterdir():
        shutil.copy2(artifact, root / artifact.name)
    return root


@pytest.mark.parametrize("part", parts_of("install"), ids=lambda p: p.text)
def test_install_command(part: Part, checkout: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    if part.text.startswith("pipx "):
        pipx = shutil.which("pipx")
        assert pipx, "pipx is not installed (tests/bootstrap installs Debian's pipx)"
        env = clean_env(f"{Path(pipx).parent}{os.pathsep}/usr/bin:/bin", home)
        env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(bin_dir),
                   PIPX_DEFAULT_PYTHON=os.path.realpath(shutil.which("python3") or ""))
    else:
        venv = tmp_path / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        bin_dir = venv / "bin"
        env = clean_env(f"{bin_dir}{os.pathsep}/usr/bin:/bin", home)
    ran = run_part(part, checkout, PLACEHOLDERS, env=env, timeout=900)
    assert_ran(ran)
    done = subprocess.run([str(bin_dir / "kubectl-offwake"), "--version"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"kubectl-offwake {__version__}", \
        f"{part.command.where}: after `{ran.command}`: {done.stdout}{done.stderr}"
