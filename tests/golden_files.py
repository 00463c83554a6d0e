"""Golden files: rendered output compared byte for byte with tests/golden/NAME.

After an intended change to the output, regenerate and review::

    OFFWAKE_UPDATE_GOLDEN=1 python3 -m pytest tests/unit -k golden
    git diff tests/golden/

Update mode writes the file and then *fails* the test, so a run with the variable set never
passes: a golden test that rewrites its own expectation and then compares against it could
not fail, and the variable left set in a shell (or a CI job) would hide every regression.
Run again without it to see the tests pass against what was written.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_ENV = "OFFWAKE_UPDATE_GOLDEN"
#: Lines of unified diff a failure shows (the whole diff of an HTML page is thousands).
DIFF_LINES = 60


def update_mode() -> bool:
    return os.environ.get(UPDATE_ENV) == "1"


def check_golden(name: str, text: str, directory: Path = GOLDEN_DIR,
                 update: bool | None = None) -> None:
    """Fail unless ``text`` is exactly ``directory/name``; in update mode write it and fail."""
    path = directory / name
    if update_mode() if update is None else update:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        pytest.fail(f"wrote {path.name} ({UPDATE_ENV}=1): review `git diff -- {directory}` "
                    f"and run the tests again without {UPDATE_ENV}", pytrace=False)
    if not path.exists():
        pytest.fail(f"{path} is missing; create it with {UPDATE_ENV}=1 and review it",
                    pytrace=False)
    expected = path.read_bytes().decode("utf-8")
    if text != expected:
        diff = list(difflib.unified_diff(expected.splitlines(), text.splitlines(),
                                         f"golden/{name}", "rendered", lineterm="", n=1))
        shown = "\n".join(diff[:DIFF_LINES])
        more = f"\n... {len(diff) - DIFF_LINES} more diff lines" if len(diff) > DIFF_LINES else ""
        pytest.fail(f"{name} differs from the golden file; if the change is intended, "
                    f"regenerate with {UPDATE_ENV}=1 and review the diff:\n{shown}{more}",
                    pytrace=False)
