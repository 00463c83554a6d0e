"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="module")
def build_c(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``build_c(source, name)``: a C program given as text, built with frame pointers (so
    its stacks name its functions); ``name`` is the executable's, so the process's comm."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the traced program (apt-get install gcc)")

    def build(source: str, name: str) -> Path:
        workdir = tmp_path_factory.mktemp(name)
        path = workdir / f"{name}.c"
        path.write_text(source)
        binary = workdir / name
        subprocess.run(["gcc", "-O1", "-pthread", "-fno-omit-frame-pointer", "-o", str(binary),
                        str(path)], check=True)
        return binary

    return build
