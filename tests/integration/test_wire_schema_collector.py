"""Every record a real collector run writes fits its TypedDict in wire/schema.py (root + eBPF).

The unit test (tests/unit/test_wire_schema.py) feeds the collector's record-writing code
stand-in BPF maps; this runs the collector itself on programs that make each kind of
record: eventfd wakes (blocked wakeups, waker stacks), a CPU hog on the target's CPU
(preempted wakeups), a program that never runs (pending for the whole run), and SIGTERM
mid-trace (a final snapshot, cgroup counters and ``end``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs"))
import harness  # noqa: E402

from kubectl_offwake.wire import read_records  # noqa: E402
from tests.wire_shapes import matching_shape, record_problems  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]

harness.skip_module_unless_runnable()


@pytest.fixture(scope="module")
def exes():
    tmp = tempfile.mkdtemp(prefix="h1-wire-")
    try:
        yield {name: harness.compile_prog(name, tmp) for name in ("eventfd", "hog")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_every_record_of_a_real_run_fits_the_schema(exes):
    busy = harness.Prog(exes["eventfd"], 400, 5)
    hog = harness.Prog(exes["hog"], 60, 50)
    idle = harness.Prog(exes["eventfd"], 10, 10)  # never told to go: blocked all run long
    collector = harness.Collector(
        ["--pid", str(busy.pid), "--pid", str(hog.pid), "--pid", str(idle.pid),
         "--duration", "120", "--interval", "0.5", "--node-name", "h1-node"])
    try:
        collector.wait_attached()
        busy.go()
        hog.go()
        time.sleep(1.5)
        code = collector.stop(timeout=30)
    finally:
        for prog in (busy, hog, idle):
            prog.close()
        if collector.proc.poll() is None:
            collector.proc.kill()
    assert code == 0, collector.stderr[-2000:]
    records = collector.records()
    bad = {f"{r.get('type')} seq {r.get('seq')}": record_problems(r) for r in records}
    assert {k: v for k, v in bad.items() if v} == {}
    # Each kind of record this run is built to make showed up, so none went unchecked.
    shapes = {matching_shape(r).__name__ for r in records}
    assert shapes >= {
        "HelloRecord", "TargetRecord", "ProgressRecord", "ProcessRecord", "StackRecord",
        "BlockedWakeupRecord", "PreemptedWakeupRecord", "OnCpuRecord", "PendingRecord",
        "CgroupStatRecord", "SnapshotRecord", "EndRecord", "LogRecord"}, sorted(shapes)
    # And the reader keeps every one of them, unchanged.
    result = read_records(collector.lines)
    assert result.ended and not result.warnings
    assert len(result.records) == len(records)
