"""How a collector run ends (root + eBPF): the target exits, or SIGTERM arrives mid-trace.

Either way the stream must be complete (a committed final snapshot and an ``end``), the exit
code 0, and the data symbolized and classifiable.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs"))
import harness  # noqa: E402

from kubectl_offwake.analysis.analyze import analyze  # noqa: E402
from kubectl_offwake.importers import load_text  # noqa: E402
from kubectl_offwake.wire import read_records  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]

harness.skip_module_unless_runnable()


@pytest.fixture(scope="module")
def eventfd_exe():
    tmp = tempfile.mkdtemp(prefix="h5-life-")
    try:
        yield harness.compile_prog("eventfd", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _eventfd_edges(report, prog):
    return [w for w in report.wakeups
            if w.target.tid == prog.target_tid and w.waker is not None
            and w.waker.tid == prog.waker_tid]


def _busy_wake(record: dict, prog: harness.Prog) -> bool:
    """A wakeup record of the program's target thread by its waker thread."""
    return (record["type"] == "wakeup" and record["tid"] == prog.target_tid
            and record.get("waker_tid") == prog.waker_tid)


def _wait_for_stream(collector: harness.Collector, prog: harness.Prog, snapshots: int,
                     wakes: int, timeout: float = 60) -> None:
    """Until the stream has ``snapshots`` snapshots and ``wakes`` of the program's wakeups."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in list(collector.lines) if line.strip()]
        seen = sum(r["count"] for r in records if _busy_wake(r, prog))
        if [r["type"] for r in records].count("snapshot") >= snapshots and seen >= wakes:
            return
        time.sleep(0.1)
    raise AssertionError(f"the stream had no {snapshots} snapshots with {wakes} wakeups of "
                         f"{prog.name} in {timeout:g} s")


def test_target_exit_ends_the_run(eventfd_exe, tmp_path):
    """Also the zipapp path: the collector runs as the Kubernetes side ships it."""
    from kubectl_offwake.collector.bundle import write_zipapp

    pyz = write_zipapp(str(tmp_path / "collector.pyz"))
    prog = harness.Prog(eventfd_exe, 30, 10)
    collector = harness.Collector(["--pid", str(prog.pid), "--duration", "120",
                                   "--interval", "30"], cwd=str(tmp_path), zipapp=pyz)
    try:
        collector.wait_attached()
        prog.go()
        prog.wait_done()
        prog.close()  # the target exits
        code = collector.wait(timeout=60)
    finally:
        prog.close()
        if collector.proc.poll() is None:
            collector.proc.kill()
    assert code == 0, collector.stderr[-2000:]
    records = collector.records()
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "target-exit"
    # noticed before the first 30 s interval was up: the end's snapshot is the only one
    assert [r["type"] for r in records].count("snapshot") == 1, records[-1]
    assert any(r["type"] == "log" and "exited" in r["message"] for r in records)
    # the only snapshot came after the exit: frames still symbolized from the warm cache
    report = analyze(load_text(collector.text(), "collector"))
    edges = _eventfd_edges(report, prog)
    assert edges and edges[0].category == "eventfd"
    assert sum(w.edge.count or 0 for w in edges) >= 29
    assert "target_loop" in harness.user_frames_of(edges[0].edge.target_stack)
    assert "waker_loop" in harness.user_frames_of(edges[0].edge.waker_stack)


def test_sigterm_mid_trace_gives_a_complete_end(eventfd_exe):
    busy = harness.Prog(eventfd_exe, 2000, 5)   # 10 s of wakes, stopped after 3 snapshots
    idle = harness.Prog(eventfd_exe, 10, 10)    # never told to go: blocked all run long
    collector = harness.Collector(["--pid", str(busy.pid), "--pid", str(idle.pid),
                                   "--duration", "120", "--interval", "0.5",
                                   "--preempt-user-stacks"])  # (that build variant loads)
    try:
        collector.wait_attached()
        busy.go()
        _wait_for_stream(collector, busy, snapshots=3, wakes=100)
        code = collector.stop(timeout=60)
    finally:
        busy.close()
        idle.close()
        if collector.proc.poll() is None:
            collector.proc.kill()
    assert code == 0, collector.stderr[-2000:]
    result = read_records(collector.lines)
    assert result.ended, result.warnings
    end = result.records[-1]
    assert end["type"] == "end" and end["reason"] == "signal"
    assert end["totals"]["snapshots"] >= 2 and end["totals"]["wakeups"] > 100
    snaps = [r for r in result.records if r["type"] == "snapshot"]
    assert [s["snap"] for s in snaps] == list(range(1, len(snaps) + 1))
    report = analyze(load_text(collector.text(), "collector"))
    edges = _eventfd_edges(report, busy)
    count = sum(w.edge.count or 0 for w in edges)
    sent = sum(r["count"] for r in result.records if _busy_wake(r, busy))
    assert 100 <= sent == count < 2000, (sent, count)  # all it sent, before the run's end
    # the idle program's threads never ran: reported as pending for the whole run
    pend = {p.task.tid: p for p in report.pending if p.task.tid is not None}
    for tid in (idle.target_tid, idle.waker_tid):
        assert tid in pend, sorted(pend)
        assert pend[tid].waiting_us >= 1_000_000
        assert "futex" in " ".join(pend[tid].stack.kernel_frames)
