"""Golden files: the sample recording, analysed, in every text format.

The sample (tests/sample_recording.py) goes through the real ``analyze`` and the real
renderers; the output must equal tests/golden/sample.* byte for byte (the ``golden``
fixture, tests/golden_files.py, says how to regenerate them and why that run fails).

Nothing in the output may depend on the clock, the machine or dict ordering, so the same
tree always renders the same bytes; the determinism tests below guard that separately from
the golden comparison (which only says *whether* the bytes changed).
"""

from __future__ import annotations

import io
import random
from typing import Callable, Dict, Optional, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.render import RenderOptions, render
from tests.sample_recording import build_sample_recording

#: golden file name -> (format, options)
CASES: Dict[str, Tuple[str, Optional[RenderOptions]]] = {
    "sample.table.txt": ("table", RenderOptions(width=120)),
    "sample.table-100.txt": ("table", RenderOptions(width=100)),
    "sample.json": ("json", None),
    "sample.folded": ("folded", None),
    "sample.speedscope.json": ("speedscope", None),
}


def _render(report: Report, fmt: str, options: Optional[RenderOptions]) -> str:
    out = io.StringIO()
    render(report, fmt, out, options or RenderOptions())
    return out.getvalue()


@pytest.fixture(scope="module")
def sample_report() -> Report:
    return analyze(build_sample_recording())


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(sample_report: Report, name: str,
                golden: Callable[[str, str], None]) -> None:
    fmt, options = CASES[name]
    golden(name, _render(sample_report, fmt, options))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendering_is_deterministic_across_fresh_builds(name: str) -> None:
    """Two independent builds and analyses give the same bytes (no ids, clocks, sets)."""
    fmt, options = CASES[name]
    first = _render(analyze(build_sample_recording()), fmt, options)
    second = _render(analyze(build_sample_recording()), fmt, options)
    assert first == second


@pytest.mark.parametrize("fmt", ["folded", "speedscope", "json"])
def test_order_of_equal_sources_does_not_matter_for_sorted_formats(fmt: str) -> None:
    """Shuffling the recording's processes and source keys changes nothing."""
    baseline = _render(analyze(build_sample_recording()), fmt, None)
    recording = build_sample_recording()
    items = list(recording.processes.items())
    random.Random(7).shuffle(items)
    recording.processes = dict(items)
    source_items = list(recording.source.items())
    random.Random(11).shuffle(source_items)
    recording.source = dict(source_items)
    assert _render(analyze(recording), fmt, None) == baseline


def test_golden_table_is_plain_text_and_fits(sample_report: Report) -> None:
    for name in ("sample.table.txt", "sample.table-100.txt"):
        fmt, options = CASES[name]
        assert options is not None
        text = _render(sample_report, fmt, options)
        assert "\x1b" not in text
        assert all(len(line) <= options.width for line in text.splitlines()), name
        assert all(line == line.rstrip() for line in text.splitlines()), name
