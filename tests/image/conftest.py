"""The collector image, built once per session by the real ``image/build`` (its cache makes
every run after the first take seconds) and unpacked as a runtime would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD = REPO / "image" / "build"
sys.path.insert(0, str(REPO / "image"))
sys.path.insert(0, str(HERE))

from imagefs import unpack  # noqa: E402


@dataclass
class Built:
    archive: str
    stdout: str
    stderr: str
    digest: str


def run_build(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``image/build`` as a user runs it (its own shebang), with the default cache."""
    return subprocess.run([str(BUILD), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    if os.geteuid() != 0:
        pytest.skip("image/build needs root (mmdebstrap chroots into the image)")
    out = tmp_path_factory.mktemp("image") / "collector.oci.tar"
    proc = run_build("--out", str(out))
    assert proc.returncode == 0, f"image/build failed:\n{proc.stderr[-3000:]}"
    m = re.search(r"^digest: (sha256:[0-9a-f]{64})$", proc.stdout, re.M)
    assert m, proc.stdout
    return Built(str(out), proc.stdout, proc.stderr, m.group(1))


@pytest.fixture(scope="session")
def image_root(built, tmp_path_factory):
    """The image's root filesystem (some hundred MB: removed after the session)."""
    root = str(tmp_path_factory.mktemp("rootfs") / "root")
    unpack(built.archive, root)
    yield root
    shutil.rmtree(root, ignore_errors=True)
