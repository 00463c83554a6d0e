"""What the findings tests share: looking a finding up in a report, and two fixtures of
the ``Mesh`` recording (tests/unit/test_aggregate.py) several families use."""

from __future__ import annotations

from typing import Any, Callable, List

from kubectl_offwake.analysis.report import Finding, Report
from tests.unit.test_aggregate import APP, W_TCP, Mesh, waker

T_EPOLL_IDLE = ("__schedule", "schedule", "schedule_hrtimeout_range_clock", "do_epoll_wait",
                "__x64_sys_epoll_wait", "do_syscall_64")
MAIN = Mesh.task("envoy")


def ids(report: Report) -> List[str]:
    return [f.id for f in report.findings]


def one(report: Report, fid: str) -> Finding:
    found = [f for f in report.findings if f.id == fid]
    assert len(found) == 1, ids(report)
    return found[0]


def workers_busy(m: Mesh, runq_share: float, by=None) -> None:
    """Two workers, 10 s off-CPU in all, runq_share of it runnable (preempted)."""
    off = 10_000_000
    runq = int(off * runq_share)
    for comm in ("wrk:worker_0", "wrk:worker_1"):
        m.wake(comm, waker(APP), W_TCP, 500, off // 2 - runq // 2)
        m.preempt(comm, 50, runq // 2, by=by)


def at_edge(make: Callable[[Any], Mesh], fid: str, at: Any, under: Any) -> None:
    """A threshold pinned: the finding for the recording made at its value, silence for
    the one made just under it (so a changed value fails a test)."""
    assert fid in ids(make(at).report()), f"{fid} silent at {at!r}"
    assert fid not in ids(make(under).report()), f"{fid} raised at {under!r}"
