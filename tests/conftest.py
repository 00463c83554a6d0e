"""Fixtures shared by every test folder."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.golden_files import check_golden


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """``golden(name, text)``: compare with tests/golden/NAME (see tests/golden_files.py)."""
    return check_golden
