"""The one description of the wire records: their types and required fields.

Every record is one JSON object on one line with ``type`` and an increasing ``seq``.
Snapshots are deltas: the ``wakeup``/``oncpu`` records between two ``snapshot`` markers
add to what came before, and a ``snapshot`` record commits them. A reader that meets a
truncated stream keeps everything up to the last commit (``snapshot`` or ``end``).

Record types (fields beyond ``type`` and ``seq``; ``?`` marks optional ones):

hello      schema, tool_version, collector, kernel, node, started (unix s), interval_s,
           duration_s?, min_block_us?, headers {source, path}?, bcc_version?, python?
target     processes [{pid, comm, exe?, container_id?, runtime?, pod_uid?, cgroup?}], by
progress   elapsed_s (since the collector started), tracing_s? (since tracing began),
           switches, wakeups, edges?, lost {stack_eexist, stack_enomem, map_full}?,
           map_use {name: [used, size]}?
process    pid, comm, cgroup?, container_id?, runtime?, pod_uid?, kernel_thread, exe?,
           threads {tid: comm}?, gone? (true: exited before the collector could read /proc)
identity   pid, pod? ("ns/name"), container?, node?, label? — written by the client when it
           names a process through the Kubernetes API
stack      id, frames [str, leaf first], kernel_depth (how many leading frames are kernel)
           missing? ("kernel" | "user" | "both")
wakeup     snap, tid, pid, comm, state ("blocked" | "preempted"), waker_tid?, waker_pid?,
           waker_comm?, target_stack (id), waker_stack? (id), count, total_us, max_us,
           blocked_us, runq_us, preempted_by_pid?, preempted_by_tid?, preempted_by_comm?
oncpu      snap, tid, pid, comm, count, total_us, max_us, hist_log2_us [counts],
           max_busy_us? (the longest busy period: CPU time between two sleeps, runs split by
           preemptions added up)
queued     snap, tid, pid, comm, holder_tid, holder_pid, holder_comm, count, wait_us, max_us
           — the target thread's run-queue waits (after a wake, or a whole preemption) by who
           held the CPU: the task that ran on it just before the target got it back
           (holder_tid 0: the CPU was idle; collector/runqueue.py)
pending    tid, pid, comm, state ("blocked" | "runq": woken, not yet run | "preempted"),
           waiting_us, target_stack (id) — still off the CPU at the end;
           whole_run? (true: off the CPU for the whole trace, waiting_us is then a lower bound)
cgroup_stat pid, cgroup, phase ("start" | "end"), nr_periods, nr_throttled, throttled_usec,
           file? (the cpu.stat read)
envoy_stats pid, listeners {"host:port": listening sockets} (Envoy's TCP listeners at the end),
           admin? (the admin address read), window_s? (seconds between the two reads),
           delta? {counter: rise} — Envoy's admin counters (collector/envoy_stats.py
           FAMILIES) that rose between a read just before tracing and one after the last
           snapshot; admin, window_s and delta are absent when the admin could not be read
snapshot   snap, elapsed_s, tracing_s? — commits the deltas sent since the previous snapshot
end        reason ("duration" | "signal" | "target-exit" | "error" | "resolve-only"), elapsed_s,
           tracing_s?,
           totals {switches, wakeups, ...}, lost {...}, warnings [str]
log        level ("debug" | "info" | "warning" | "error"), message
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Tuple

SCHEMA_VERSION = 1

#: Required fields per record type. Types not listed are skipped by readers.
RECORD_TYPES: Dict[str, FrozenSet[str]] = {
    "hello": frozenset({"schema"}),
    "target": frozenset({"processes"}),
    "progress": frozenset({"elapsed_s"}),
    "process": frozenset({"pid", "comm"}),
    "identity": frozenset({"pid"}),
    "stack": frozenset({"id", "frames"}),
    "wakeup": frozenset({"tid", "comm", "target_stack", "total_us"}),
    "oncpu": frozenset({"tid", "comm", "count", "total_us", "max_us"}),
    "queued": frozenset({"tid", "holder_tid", "count", "wait_us"}),
    "pending": frozenset({"tid", "comm", "waiting_us"}),
    "cgroup_stat": frozenset({"phase"}),
    "envoy_stats": frozenset({"pid"}),
    "snapshot": frozenset({"snap"}),
    "end": frozenset({"reason"}),
    "log": frozenset({"level", "message"}),
}

#: Records that commit the deltas before them.
COMMIT_TYPES = frozenset({"snapshot", "end"})
#: Records that are deltas, held back until committed.
DELTA_TYPES = frozenset({"wakeup", "oncpu", "queued", "pending"})


class WireError(Exception):
    """Input that cannot be read as a recording; the message is one sentence for a user."""


#: The collector's loss counters (``progress.lost`` / ``end.lost``): what each means and the
#: collector option that makes room. The live display and the findings both read this.
LOSS_COUNTERS: Dict[str, Tuple[str, str]] = {
    "stack_eexist": ("stacks lost to hash collisions in the stack map", "--stack-storage-size"),
    "stack_enomem": ("stacks lost because the stack map was full", "--stack-storage-size"),
    "agg_full": ("wakeups not counted because the aggregation map was full", "--agg-size"),
    "start_full": ("switch-outs not recorded because the start map was full", "--start-size"),
    "oncpu_full": ("on-CPU runs lost because the on-CPU map was full", "--oncpu-size"),
    "queued_full": ("run-queue waits not attributed because the queued map was full",
                    "--oncpu-size"),
    "map_full": ("records lost because a map was full", "--agg-size"),
}
#: ``map_full`` is the collector's sum of these counters; it is shown only when they are absent.
LOSS_SUM_PARTS = ("agg_full", "start_full", "oncpu_full", "queued_full")


def distinct_losses(lost: Dict[str, int]) -> Dict[str, int]:
    """Non-zero loss counters, without the ``map_full`` sum when its parts are present."""
    out = {k: v for k, v in lost.items() if isinstance(v, int) and v > 0}
    if "map_full" in out and any(p in lost for p in LOSS_SUM_PARTS):
        del out["map_full"]
    return out


def loss_sentences(lost: Dict[str, int]) -> List[str]:
    """One sentence per non-zero loss counter, naming the collector option to raise."""
    notes = []
    for key, value in sorted(distinct_losses(lost).items()):
        meaning, flag = LOSS_COUNTERS.get(key, (key.replace("_", " "), ""))
        advice = f"; raise {flag}" if flag else ""
        notes.append(f"{value:,} {meaning}{advice}")
    return notes
