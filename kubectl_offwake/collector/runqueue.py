"""Who held the CPU while a target thread waited in the run queue: ``queued`` records.

A woken thread that cannot run at once waits in the run queue; so does a preempted one.
A noisy neighbour shows up mostly as such waits after wakes rather than as preemptions (a
batch job at a higher weight delays the wakeup, it need not interrupt a running sidecar),
so the program names, at the switch-in that ends each wait, the task that ran on that CPU
just before the target got it back: ``sched_switch``'s ``prev`` (a tracepoint field, no
kernel struct). It is the last holder of the CPU, not necessarily the only one; a holder
of tid 0 means the CPU was idle (the wait was the wakeup's own latency).
"""

from __future__ import annotations

from ..wire.schema import QueuedRecord
from .bpfprog import QueuedRow, us


def queued_record(row: QueuedRow, snap: int) -> QueuedRecord:
    """One ``queued`` delta: the waits of one target thread behind one holder since the
    previous snapshot."""
    return {"type": "queued", "snap": snap, "tid": row.tid, "pid": row.tgid, "comm": row.comm,
            "holder_tid": row.holder_tid, "holder_pid": row.holder_tgid,
            "holder_comm": row.holder_comm, "count": row.count,
            "wait_us": us(row.wait_ns), "max_us": us(row.max_ns)}
