"""Fixtures shared by every test folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.golden_files import check_golden

# The lab's fixtures, defined once for every folder: one session-scoped lab per pytest run,
# whichever folders ask for it (two definitions would start two labs with the same prefix).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab.fixtures import lab, lab_cluster  # noqa: E402,F401


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """``golden(name, text)``: compare with tests/golden/NAME (see tests/golden_files.py)."""
    return check_golden
