"""The folded renderer: BCC ``offwaketime -f -d`` lines that FlameGraph and our importer read."""

from __future__ import annotations

import io
import re

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.importers import load_text
from kubectl_offwake.render import RenderOptions, render
from kubectl_offwake.render.folded import clean, target_frames, waker_frames
from tests.sample_recording import build_odd_recording, build_sample_recording

#: flamegraph.pl's own line pattern: everything, whitespace, a number.
FLAMEGRAPH_LINE = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")


def _folded(report: Report) -> str:
    out = io.StringIO()
    render(report, "folded", out, RenderOptions())
    return out.getvalue()


@pytest.fixture(scope="module")
def sample() -> Report:
    return analyze(build_sample_recording())


def test_every_line_parses_like_flamegraph_pl_and_values_add_up(sample: Report) -> None:
    text = _folded(sample)
    lines = text.splitlines()
    assert lines == sorted(lines)
    total = 0
    for line in lines:
        match = FLAMEGRAPH_LINE.match(line)
        assert match, line
        total += int(match.group(2))
        frames = match.group(1).split(";")
        assert frames.count("--") == 1, line
    assert total == sample.totals.off_cpu_us


def test_chain_order_matches_bcc(sample: Report) -> None:
    """target comm; user root..leaf; -; kernel root..leaf; --; waker kernel leaf..root; -;
    waker user leaf..root; waker comm."""
    line = next(ln for ln in _folded(sample).splitlines()
                if ln.startswith("envoy;") and "coredns" in ln)
    stack, value = line.rsplit(" ", 1)
    frames = stack.split(";")
    target, waker = frames[: frames.index("--")], frames[frames.index("--") + 1:]
    assert target[0] == "envoy" and target[1] == "_start"
    assert target[target.index("-") - 1] == "epoll_wait"  # user leaf just before the kernel
    assert target[-1] == "__schedule"  # kernel leaf last
    assert waker[0] == "try_to_wake_up"  # waker kernel leaf first
    assert waker[waker.index("-") - 1] == "entry_SYSCALL_64_after_hwframe"
    assert waker[waker.index("-") + 1] == "runtime/internal/syscall.Syscall6"
    assert waker[-2] == "runtime.goexit" and waker[-1] == "coredns"
    wake = next(w for w in sample.wakeups
                if w.target.comm == "envoy" and w.waker and w.waker.comm == "coredns")
    assert int(value) == wake.edge.total_us


def test_preemption_has_an_empty_waker_part_like_bcc(sample: Report) -> None:
    lines = [ln for ln in _folded(sample).splitlines() if "preempt_schedule_irq" in ln
             or "exit_to_user_mode_loop" in ln]
    assert lines
    for line in lines:
        assert re.search(r";--; \d+$", line), line


def test_odd_frames_missing_halves_and_unknown_boundaries() -> None:
    text = _folded(analyze(build_odd_recording()))
    lines = text.splitlines()
    assert len(lines) == 4  # the zero-time edge is dropped
    for line in lines:
        stack = line.rsplit(" ", 1)[0]
        assert "\n" not in stack
        assert all(";" not in part for part in stack.split(";"))
    assert any("operator()() const:with:semicolons" in ln for ln in lines)
    assert any("Envoy::Something\\x0awith a newline" in ln for ln in lines)
    assert any(";[Missed User Stack];do_epoll_wait;" in ln for ln in lines)
    assert any(";--;[Missed Kernel Stack];write;main;mystery " in ln for ln in lines)
    # Unknown boundary: one run of frames, no delimiter, waker leaf first.
    assert any(";--;try_to_wake_up;ep_poll_callback;eventfd_write;write;" in ln
               for ln in lines)


def test_stack_halves_directly() -> None:
    rec = build_odd_recording()
    stacks = {e.target_stack for e in rec.edges} | {e.waker_stack for e in rec.edges
                                                    if e.waker_stack}
    for stack in stacks:
        t = target_frames(stack)
        w = waker_frames(stack)
        if stack.kernel_depth is None:
            assert t == list(reversed(stack.frames)) and w == list(stack.frames)
    assert clean("a;b\nc\r\nd e") == "a:b\\x0ac\\x0d\\x0ad e"
    assert clean("\x1b[2J\u202e") == "\\x1b[2J\\u202e"
    assert clean(clean("a;\x1b")) == clean("a;\x1b")  # a second pass changes nothing


def test_identical_lines_are_summed() -> None:
    rec = build_sample_recording()
    first = rec.edges[0]
    from kubectl_offwake.analysis.model import Edge, Task
    # Same comm and stacks, another thread id: one folded line, the sum of both.
    twin = Task(first.target.comm, first.target.pid, 99999)
    rec.edges.append(Edge(twin, first.target_stack, first.waker, first.waker_stack,
                          total_us=1234, count=1))
    report = analyze(rec)
    base = {ln.rsplit(" ", 1)[0]: int(ln.rsplit(" ", 1)[1])
            for ln in _folded(analyze(build_sample_recording())).splitlines()}
    now = {ln.rsplit(" ", 1)[0]: int(ln.rsplit(" ", 1)[1]) for ln in _folded(report).splitlines()}
    assert set(now) == set(base)
    assert sum(now.values()) == sum(base.values()) + 1234


def test_round_trip_through_the_bcc_folded_importer(sample: Report) -> None:
    """`kubectl offwake report` re-imports our folded output to the same classification."""
    text = _folded(sample)
    recording = load_text(text, "sample.folded")
    again = analyze(recording)
    assert not recording.warnings
    assert [(g.key, g.total_us) for g in again.by_category] == \
        [(g.key, g.total_us) for g in sample.by_category]

    def key(report: Report) -> list:
        return sorted((w.category, w.cause, w.detail or "", w.edge.total_us, w.target.comm,
                       w.waker.comm if w.waker else "") for w in report.wakeups)

    assert key(again) == key(sample)
    assert _folded(again) == text  # a fixed point
