"""Threads that held the CPU: one worker far busier than the others, and long on-CPU runs.

Both read the collector's on-CPU runs per thread (switch-in to switch-out: count, total,
longest); sources without them (BCC imports) get neither finding.
"""

from __future__ import annotations

import statistics
from typing import Optional

from ...units import fmt_us
from ..report import CRITICAL, WARNING, Finding, Severity
from ..roles import MAIN, WORKER
from .context import Context, Process
from .wording import and_more, pct

#: Hot worker: its on-CPU time at least this many times the median of the other workers.
#: Envoy keeps a connection on the worker that accepted it, so a few long-lived connections
#: make some skew normal; a ratio works at any load, and 3x is more than a handful of
#: connections landing unevenly gives.
HOT_RATIO = 3.0
#: ... and on the CPU at least this share of the trace: a quarter of a CPU is busy enough
#: for its queueing to show in latency, below that a skew costs nothing.
HOT_MIN_BUSY = 0.25
#: ... or, without the trace's duration (some imports), this much on-CPU time in all: a
#: quarter of a second, the busy share over a one-second trace.
HOT_MIN_ONCPU_US = 200_000
#: Event-loop stall: one on-CPU run this long delays every event queued on that thread.
#: Envoy handles an event in microseconds; 50 ms, a quarter of the watchdog's miss
#: interval, is far beyond any one event and above a typical per-hop latency budget.
STALL_US = 50_000
#: Envoy's watchdog counts a miss when a thread has not checked in for 200 ms (the
#: default ``miss_timeout``): a run this long is critical.
STALL_CRITICAL_US = 200_000


def hot_worker(ctx: Context, proc: Process) -> Optional[Finding]:
    """One worker on the CPU far more than the others."""
    runs = [r for r in proc.runs if r.target.role == WORKER]
    if len(runs) < 2:
        return None
    runs.sort(key=lambda r: (-r.oncpu.total_us, r.target.comm))
    hot = runs[0]
    hot_us = hot.oncpu.total_us
    median = statistics.median(r.oncpu.total_us for r in runs[1:])
    busy = hot_us / (ctx.duration_s * 1e6) if ctx.duration_s else None
    if hot_us < HOT_RATIO * max(median, 1):
        return None
    if busy is not None and busy < HOT_MIN_BUSY:
        return None
    if busy is None and hot_us < HOT_MIN_ONCPU_US:
        return None
    busy_text = f"{pct(busy)} of the time, " if busy is not None else "for "
    ratio = hot_us / median if median > 0 else None
    times = f"{ratio:.0f}× the median of the other workers" if ratio else \
        "while the other workers barely ran"
    comm = hot.target.comm
    return Finding(
        id="hot-worker", severity=WARNING, title=f"Hot worker: {comm}",
        text=(f"{comm}{ctx.where(proc)} was on the CPU {busy_text}{fmt_us(hot_us)} in all, "
              f"{times} ({fmt_us(median)}): its connections are not spread over the workers. "
              "Long-lived HTTP/2 or gRPC connections stick to one worker; connection "
              "balancing or more client connections spread them."),
        evidence={"worker": comm, "tid": hot.target.tid, "oncpu_us": hot_us,
                  "busy": None if busy is None else round(busy, 4),
                  "others_median_us": median,
                  "oncpu_by_worker": {r.target.comm: r.oncpu.total_us for r in runs}})


def event_loop_stall(ctx: Context, proc: Process) -> Optional[Finding]:
    """A long on-CPU run: the thread's event loop handled nothing else meanwhile."""
    stalls = [r for r in proc.runs if r.oncpu.max_us >= STALL_US
              and (r.target.role in (MAIN, WORKER) or r.target.role is None)]
    if not stalls:
        return None
    stalls.sort(key=lambda r: -r.oncpu.max_us)
    worst = stalls[0]
    severity: Severity = CRITICAL if worst.oncpu.max_us >= STALL_CRITICAL_US else WARNING
    comm = worst.target.comm
    return Finding(
        id="event-loop-stall", severity=severity, title=f"Event loop stalled: {comm}",
        text=(f"{comm}{ctx.where(proc)} once ran {fmt_us(worst.oncpu.max_us)} without "
              f"giving up the CPU{and_more(len(stalls) - 1, 'more thread')}: every event "
              "queued on its loop waited that long. Look for expensive filters, Lua/Wasm, "
              "regexes, stats merges or TLS handshakes on that thread."),
        evidence={"thread": comm, "tid": worst.target.tid, "max_us": worst.oncpu.max_us,
                  "runs": worst.oncpu.count,
                  "threads": {r.target.comm: r.oncpu.max_us for r in stalls}})
