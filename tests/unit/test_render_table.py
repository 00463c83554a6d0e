"""The terminal table: what an on-call engineer reads first."""

from __future__ import annotations

import io

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Pending, StackTable, Task
from kubectl_offwake.analysis.report import Report, Totals
from kubectl_offwake.render import RenderOptions, render
from kubectl_offwake.units import bar, fmt_share, fmt_us
from kubectl_offwake.wire.schema import TRUNCATED_FRAME
from tests.sample_recording import build_odd_recording, build_sample_recording


def _table(report: Report, **options: object) -> str:
    out = io.StringIO()
    render(report, "table", out, RenderOptions(**options))  # type: ignore[arg-type]
    return out.getvalue()


@pytest.fixture(scope="module")
def sample() -> Report:
    return analyze(build_sample_recording())


def test_sections_and_names(sample: Report) -> None:
    text = _table(sample)
    for heading in ("Where the off-CPU time went", "Who woke the threads", "Target threads",
                    "Findings", "Heaviest wake paths", "Still off the CPU when tracing stopped",
                    "CPU throttling", "Warnings"):
        assert heading in text
    # What was traced, where and for how long.
    first_lines = "\n".join(text.splitlines()[:3])
    assert "app/productpage-v1-6b7f/istio-proxy (pid 4182)" in first_lines
    assert "traced 30.0 s from 2025-11-27 15:00:00 UTC" in first_lines
    assert "node worker-2" in first_lines and "kernel 6.6.58-talos" in first_lines
    # Every category and every waker group of the report appears.
    for group in sample.by_category:
        assert group.key in text
    for group in sample.by_waker[:10]:
        assert group.label in text
    # Roles and the stalled worker's long run.
    assert "access-log-flush" in text and "grpc-timer" in text and "watchdog" in text
    assert "48.2 ms" in text
    assert "throttled in 17 of 300 periods (5.7%)" in text
    assert "stack_eexist 37" in text
    assert "AccessLogFlush (4191)" in text and "642 ms" in text


def test_category_rows_show_count_time_and_share(sample: Report) -> None:
    text = _table(sample)
    top = sample.by_category[0]
    row = next(line for line in text.splitlines() if line.startswith(top.key + " "))
    assert fmt_us(top.total_us) in row
    assert f"{top.count:,}" in row
    assert fmt_share(top.share) in row
    assert bar(top.share, 16) in row


def test_findings_are_printed(sample: Report) -> None:
    text = _table(sample, width=120)
    for finding in sample.findings:
        assert finding.title in text


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_fits_the_width_without_colour_codes(sample: Report, width: int) -> None:
    text = _table(sample, width=width)
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= width


def test_colour_only_when_asked(sample: Report) -> None:
    text = _table(sample, color=True)
    assert "\x1b[" in text


def test_sources_without_counts_and_odd_frames() -> None:
    text = _table(analyze(build_odd_recording()))
    assert "BCC offwaketime -f output" in text and "from odd.folded" in text
    assert "wrk:worker_0" in text and "mystery" in text
    assert "preempted" in text


def test_an_empty_report_says_so() -> None:
    report = Report(source={}, totals=Totals(), wakeups=[], by_category=[], by_waker=[],
                    by_thread=[], findings=[])
    text = _table(report)
    assert "No off-CPU time was recorded" in text
    assert "Nothing to judge" in text and "Nothing stands out" not in text


@pytest.mark.parametrize("us,expected", [
    (0, "0 µs"), (999, "999 µs"), (999.7, "1.00 ms"), (1_000, "1.00 ms"), (12_345, "12.3 ms"),
    (999_400, "999 ms"), (999_999, "1.00 s"), (1_000_000, "1.00 s"), (59_940_000, "59.9 s"),
    (59_960_000, "1m 00s"), (60_000_000, "1m 00s"), (167_000_000, "2m 47s"),
    (3_720_000_000, "1h 02m"), (None, "-"),
])
def test_human_durations(us: object, expected: str) -> None:
    assert fmt_us(us) == expected  # type: ignore[arg-type]


def test_a_pending_stack_cut_at_a_frame_pointer_loop_says_so() -> None:
    stacks = StackTable()
    stack = stacks.intern(["schedule", "pipe_read", "read_in_loop", "loop_marker",
                           TRUNCATED_FRAME], 2)
    report = Report({}, Totals(), [], [], [], [], [],
                    pending=[Pending(Task("fp_loop", 1, 2), 9000, stack)])
    row = next(line for line in _table(report, width=200).splitlines() if "fp_loop" in line)
    assert row.rstrip().endswith(f"pipe_read ← read_in_loop ← {TRUNCATED_FRAME}")
