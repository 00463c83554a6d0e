"""Fixtures shared by every test folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List

import pytest

from tests.golden_files import check_golden

# The lab's fixtures, defined once for every folder: one session-scoped lab per pytest run,
# whichever folders ask for it (two definitions would start two labs with the same prefix).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab.fixtures import lab, lab_cluster  # noqa: E402,F401


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """The end-to-end tests run last. Their lab lives for the whole session and keeps every
    pod they made (Envoys, coredns, app loops) running until it stops; run before the
    integration tests, those processes share the CPU with the demo's Envoy and are, rightly,
    reported as noisy neighbours by the scenario tests."""
    items.sort(key=lambda item: Path(str(item.fspath)).parent.name == "e2e")


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """``golden(name, text)``: compare with tests/golden/NAME (see tests/golden_files.py)."""
    return check_golden
