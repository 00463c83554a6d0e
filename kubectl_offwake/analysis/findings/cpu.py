"""Threads that were ready to run but had no CPU: CFS throttling or a noisy neighbour.

Both show as runnable-but-waiting time: all of a preemption, and the run-queue part of a
wake (the collector splits each wake's off-CPU time into blocked and run-queue). What
tells them apart is observed, not guessed: throttling needs the container's ``cpu.stat``
counters to have risen during the trace; a neighbour needs the collector to name who held
the CPU while the threads waited. A neighbour mostly delays woken threads rather than
preempting running ones, so the collector's run-queue holders (the task that ran on the
CPU last before each waiting thread got it, :mod:`..runqueue`) are the evidence; a
recording without them (an older collector) falls back on ``preempted_by``, who took the
CPU at a preemption, and the finding says which it rests on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional

from ...units import fmt_us
from ..model import Recording, Throttling
from ..naming import is_kernel_name
from ..report import CRITICAL, WARNING, Finding, Severity
from ..roles import WORKER
from .context import Context, Process
from .evidence import PREEMPTIONS
from .wording import pct

#: The share of the threads' off-CPU time spent runnable, waiting for a CPU, that is worth
#: a finding. A woken thread on a node with CPU to spare runs within tens of microseconds,
#: a fraction of a percent of the millisecond gaps between its requests; at 5% the wait for
#: a CPU is a visible part of every request's latency rather than scheduler noise.
RUNQ_SHARE_MIN = 0.05
#: ... and at least this much runnable wait in all (10 ms, a tenth of one 100 ms CFS
#: period), so a near-idle trace whose few wakes happened to queue says nothing.
RUNQ_MIN_US = 10_000
#: From this share on the shortage is critical: for a fifth of the time the threads were
#: off the CPU they were ready to run, so waiting for a CPU dominates their latency.
RUNQ_SHARE_CRITICAL = 0.20
#: Other processes must have held the CPU for at least this share of the runnable wait
#: (and RUNQ_MIN_US in all) before one is named a noisy neighbour. Envoy's threads share
#: its CPUs and queue behind each other, and kernel threads take a CPU now and then; below
#: a quarter of the wait, moving a neighbour would not shorten it much, and the threads
#: mostly waited for each other.
NEIGHBOUR_MIN_SHARE = 0.25
#: Kernel threads that held the CPU (ksoftirqd doing the node's network work, kworkers,
#: RCU) are no neighbour one can move or out-request: their time is counted apart
#: (``kernel_us``) and the holders table lists them.


@dataclass(frozen=True)
class RunnableWait:
    """Off-CPU time of a process's (worker) threads and how much of it was runnable."""

    off_us: int
    runq_us: int


@dataclass(frozen=True)
class ThrottleDeltas:
    """How much the ``cpu.stat`` counters of a process's cgroup rose during the trace
    (None: not recorded)."""

    nr_throttled: Optional[int]
    throttled_usec: Optional[int]
    nr_periods: Optional[int]


def cpu_shortage(ctx: Context, proc: Process) -> Optional[Finding]:
    """CFS throttling (counters rose) or a noisy neighbour (preempted by others, no throttling)."""
    deltas = throttle_deltas(ctx.recording, proc.pid)
    workers_only = bool(proc.workers)
    who = "worker threads" if workers_only else "traced threads"
    wait = runnable_wait(proc, workers_only)
    if wait.off_us <= 0 or wait.runq_us < RUNQ_MIN_US \
            or wait.runq_us / wait.off_us < RUNQ_SHARE_MIN:
        return None
    share = wait.runq_us / wait.off_us
    severity: Severity = CRITICAL if share >= RUNQ_SHARE_CRITICAL else WARNING
    evidence: Dict[str, object] = {
        "threads": who, "off_cpu_us": wait.off_us, "runnable_wait_us": wait.runq_us,
        "runnable_share": round(share, 4), "nr_throttled": deltas.nr_throttled,
        "throttled_usec": deltas.throttled_usec, "nr_periods": deltas.nr_periods,
    }
    shortage = (f"The {who}{ctx.where(proc)} spent {pct(share)} of their off-CPU time "
                f"({fmt_us(wait.runq_us)}) runnable but waiting for a CPU")
    if deltas.nr_throttled:
        periods = f" of {deltas.nr_periods}" if deltas.nr_periods else ""
        spent = f", {fmt_us(deltas.throttled_usec)} in all" if deltas.throttled_usec else ""
        return Finding(
            id="cpu-throttling", severity=severity,
            title="CPU limit: CFS throttling",
            text=(f"{shortage}, and the container was throttled in {deltas.nr_throttled}"
                  f"{periods} CFS periods{spent}. Raise or remove the container's CPU limit."),
            evidence=evidence)
    return _noisy_neighbour(proc, workers_only, wait, deltas, shortage, severity, evidence)


@dataclass(frozen=True)
class HeldBy:
    """Who held the CPU while the threads waited to run: other processes by name, the
    process's own threads, kernel threads, with what that rests on."""

    others: Dict[str, int]
    own_us: int
    kernel_us: int
    #: "run-queue holders" (the collector's queued records) or "preemptions".
    basis: str


def held_by(proc: Process, workers_only: bool) -> HeldBy:
    """The run-queue holders when the recording has them, else the preemptors."""
    others: Dict[str, int] = defaultdict(int)
    own_us = kernel_us = 0
    if proc.holders:
        for h in proc.holders:
            waited = h.workers_wait_us if workers_only else h.wait_us
            if h.holder is None or waited <= 0:
                continue  # an idle CPU: the wakeup's own latency
            if h.own:
                own_us += waited
            elif h.kernel:
                kernel_us += waited
            else:
                others[h.label] += waited
        return HeldBy(dict(others), own_us, kernel_us, "run-queue holders")
    for category in PREEMPTIONS:
        for w in proc.of(category):
            by = w.preempted_by
            if (workers_only and w.target.role != WORKER) or by is None:
                continue
            if by.pid is not None and by.pid == proc.pid or by.name == proc.name:
                own_us += w.edge.total_us
            elif is_kernel_name(by.name):
                kernel_us += w.edge.total_us
            else:
                others[by.name] += w.edge.total_us
    return HeldBy(dict(others), own_us, kernel_us, "preemptions")


def _noisy_neighbour(proc: Process, workers_only: bool, wait: RunnableWait,
                     deltas: ThrottleDeltas, shortage: str, severity: Severity,
                     evidence: Dict[str, object]) -> Optional[Finding]:
    """The process that held the CPU behind the runnable wait, when other processes
    explain enough of it."""
    held = held_by(proc, workers_only)
    others_us = sum(held.others.values())
    if not held.others or others_us < max(RUNQ_MIN_US, NEIGHBOUR_MIN_SHARE * wait.runq_us):
        return None
    top, top_us = max(held.others.items(), key=lambda kv: (kv[1], kv[0]))
    evidence.update({"neighbour": top, "neighbour_us": top_us, "others_us": others_us,
                     "own_us": held.own_us, "kernel_us": held.kernel_us, "basis": held.basis,
                     "neighbours": dict(sorted(held.others.items(), key=lambda kv: -kv[1]))})
    no_throttling = ("no CFS throttling" if deltas.nr_throttled == 0
                     else "no throttling counters were recorded")
    of_all = (f" of the {fmt_us(others_us)} other processes held it"
              if len(held.others) > 1 else "")
    if held.basis == "preemptions":
        how = (f"Other processes preempted them: {top} took the CPU from them for "
               f"{fmt_us(top_us)}{of_all}")
    else:
        how = (f"Other processes ran while they waited: {top} for {fmt_us(top_us)}{of_all} "
               "(each wait counted for the task that ran just before the waiting thread "
               "got the CPU)")
    return Finding(
        id="noisy-neighbour", severity=severity,
        title=f"Noisy neighbour: {top}",
        text=(f"{shortage} ({no_throttling}). {how}. Give the pod a CPU request that "
              "reflects its load, or move the neighbour."),
        evidence=evidence)


def runnable_wait(proc: Process, workers_only: bool) -> RunnableWait:
    """Off-CPU time of the process's (worker) threads, and how much of it they spent
    runnable, waiting for a CPU: all of a preemption, the run-queue part of a wake."""
    off = runq = 0
    for cell in proc.cells:
        if workers_only and cell.target.role != WORKER:
            continue
        off += cell.sums.total_us
        if cell.category in PREEMPTIONS:
            runq += cell.sums.total_us
        elif cell.sums.runq_us is not None:
            runq += cell.sums.runq_us
        else:  # an unknown split: count what is known edge by edge
            runq += sum(w.edge.runq_us or 0 for w in cell.wakeups)
    return RunnableWait(off, runq)


def throttle_deltas(recording: Recording, pid: Optional[int]) -> ThrottleDeltas:
    """The counter rises of one traced process's cgroup (of all cgroups, when none names it)."""
    counters = _throttling_of(recording, pid)
    return ThrottleDeltas(_delta(counters, "nr_throttled"), _delta(counters, "throttled_usec"),
                          _delta(counters, "nr_periods"))


def _throttling_of(recording: Recording, pid: Optional[int]) -> List[Throttling]:
    own = [t for t in recording.throttling if t.pid is not None and t.pid == pid]
    return own or [t for t in recording.throttling if t.pid is None
                   or len(recording.throttling) == 1]


def _delta(counters: List[Throttling], counter: str) -> Optional[int]:
    values = [t.delta(counter) for t in counters]
    known = [v for v in values if v is not None]
    return sum(known) if known else None
