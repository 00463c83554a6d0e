"""Threads that held the CPU: one worker far busier than the others, and event-loop stalls.

Both read the collector's on-CPU runs per thread (switch-in to switch-out: count, total,
longest, and the longest busy period); sources without them (BCC imports) get neither
finding.

A stall is a thread's own work holding its event loop: CPU time used without once waiting
for an event. One long run shows it only on an idle CPU; where other threads want the CPU,
the scheduler splits a 250 ms spin into slices of a few milliseconds. So the fact is the
busy period (the collector adds up a thread's runs from one sleep to the next, preemptions
included), with Envoy's watchdog misses (``server.worker_N.watchdog_miss``: the thread did
not check in within 200 ms) as the confirmation when its counters were read. Recordings
without busy periods fall back on the longest single run.
"""

from __future__ import annotations

import statistics
from typing import Dict, List, Optional, Tuple

from ...units import fmt_us
from ..envoy_counts import EnvoyCounts, thread_stat_name
from ..report import CRITICAL, WARNING, Finding, Severity
from ..roles import MAIN, WORKER
from .context import Context, Process, ThreadRun
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
#: Event-loop stall: a busy period (CPU time between two sleeps) this long delays every
#: event queued on that thread. Envoy handles an event in microseconds; 50 ms, a quarter of
#: the watchdog's miss interval, is far beyond any one event and above a typical per-hop
#: latency budget.
STALL_US = 50_000
#: Envoy's watchdog counts a miss when a thread has not checked in for 200 ms (the
#: default ``miss_timeout``): a stall this long, or one the watchdog counted, is critical.
STALL_CRITICAL_US = 200_000
#: A thread on the CPU for this share of the trace is saturated rather than stalled: it
#: seldom sleeps because events keep coming, so its busy periods are long without any one
#: event being slow (the hot-worker and CPU findings speak of it). Unless the watchdog
#: counted misses for it, its busy periods make no stall.
SATURATED_SHARE = 0.9


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
    connections = _new_connections(proc.counted, [r.target.comm for r in runs])
    return Finding(
        id="hot-worker", severity=WARNING, title=f"Hot worker: {comm}",
        text=(f"{comm}{ctx.where(proc)} was on the CPU {busy_text}{fmt_us(hot_us)} in all, "
              f"{times} ({fmt_us(median)}){_connections_said(comm, connections)}. "
              "Envoy keeps a connection on the worker that accepted it: long-lived HTTP/2 "
              "or gRPC connections stick to one worker; connection balancing or more client "
              "connections spread them."),
        evidence={"worker": comm, "tid": hot.target.tid, "oncpu_us": hot_us,
                  "busy": None if busy is None else round(busy, 4),
                  "others_median_us": median,
                  "oncpu_by_worker": {r.target.comm: r.oncpu.total_us for r in runs},
                  "connections_by_worker": connections})


def _new_connections(envoy: Optional[EnvoyCounts],
                     workers: List[str]) -> Optional[Dict[str, int]]:
    """The connections each worker accepted during the trace (Envoy's per-worker listener
    counters), or None when they could not be read (``envoy``: :attr:`Process.counted`)."""
    if envoy is None:
        return None
    return {w: envoy.worker_connections(w) for w in workers}


def _connections_said(hot: str, connections: Optional[Dict[str, int]]) -> str:
    """What Envoy's counts of new connections add: whether the hot worker got more of them."""
    if connections is None:
        return ""
    total = sum(connections.values())
    if not total:
        return "; no worker accepted a new connection meanwhile, so it serves older ones"
    mine = connections.get(hot, 0)
    return (f"; it accepted {mine} of the {total} connections opened meanwhile "
            f"(Envoy's listener.*.{thread_stat_name(hot)}.downstream_cx_total)")


def event_loop_stall(ctx: Context, proc: Process) -> Optional[Finding]:
    """A long busy period: the thread's event loop handled nothing else meanwhile."""
    misses = _watchdog(proc.counted)
    stalls: List[Tuple[int, ThreadRun]] = []
    for run in proc.runs:
        if run.target.role not in (MAIN, WORKER) and run.target.role is not None:
            continue
        stalled = _stalled_us(run)
        missed = misses.get(thread_stat_name(run.target.comm) or "", 0)
        if stalled >= STALL_US and (missed or not _saturated(ctx, run)):
            stalls.append((stalled, run))
    if not stalls:
        return None
    stalls.sort(key=lambda sr: (-sr[0], sr[1].target.comm))
    worst_us, worst = stalls[0]
    comm = worst.target.comm
    missed = misses.get(thread_stat_name(comm) or "", 0)
    severity: Severity = CRITICAL if worst_us >= STALL_CRITICAL_US or missed else WARNING
    busy = worst.oncpu.max_busy_us is not None
    read = proc.counted is not None
    if not busy:
        how = f"once ran {fmt_us(worst_us)} without giving up the CPU"
    else:
        how = f"used {fmt_us(worst_us)} of CPU without once waiting for an event"
        if worst.oncpu.max_us < worst_us:
            how += (f" (its longest single run was {fmt_us(worst.oncpu.max_us)}: "
                    "preemptions split the rest)")
    dog = ""
    if missed:
        dog = (f"; Envoy's watchdog counted {missed} "
               f"miss{'es' if missed != 1 else ''} of its 200 ms deadline for this thread")
    elif read:
        dog = "; Envoy's watchdog counted no miss (it counts stalls of 200 ms and more)"
    return Finding(
        id="event-loop-stall", severity=severity, title=f"Event loop stalled: {comm}",
        text=(f"{comm}{ctx.where(proc)}{and_more(len(stalls) - 1, 'more thread')} {how}: "
              f"every event queued on its loop waited that long{dog}. Look for expensive "
              "filters, Lua/Wasm, regexes, stats merges or TLS handshakes on that thread."),
        evidence={"thread": comm, "tid": worst.target.tid, "stall_us": worst_us,
                  "basis": "busy period" if busy else "longest run",
                  "max_run_us": worst.oncpu.max_us, "max_busy_us": worst.oncpu.max_busy_us,
                  "runs": worst.oncpu.count, "watchdog_misses": missed if read else None,
                  "threads": {r.target.comm: us for us, r in stalls}})


def _stalled_us(run: ThreadRun) -> int:
    """The longest stretch of the thread's own work: its busy period when recorded (never
    shorter than its longest run), else its longest run."""
    busy = run.oncpu.max_busy_us
    return max(busy, run.oncpu.max_us) if busy is not None else run.oncpu.max_us


def _saturated(ctx: Context, run: ThreadRun) -> bool:
    return bool(ctx.duration_s) and \
        run.oncpu.total_us >= SATURATED_SHARE * (ctx.duration_s or 0) * 1e6


def _watchdog(envoy: Optional[EnvoyCounts]) -> Dict[str, int]:
    """Watchdog misses (mega-misses included) per Envoy thread name."""
    if envoy is None:
        return {}
    out = dict(envoy.watchdog_misses)
    for name, n in envoy.watchdog_mega_misses.items():
        out[name] = out.get(name, 0) + n
    return out
