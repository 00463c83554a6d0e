"""Sums of classified wakeups: by category, by waker, by target thread, and totals.

Counts, blocked/run-queue splits and maxima are ``None`` when the source has none (BCC's
output has no counts): a sum containing an unknown stays unknown rather than pretending
to be a smaller number. Shares are of the report's total off-CPU time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from .categories import CATEGORIES, CATEGORY_BY_ID
from .model import OnCpu, Recording, Task
from .naming import Namer
from .report import Group, Party, ThreadSummary, Totals, Wakeup

PREEMPTED_KEY_PREFIX = "preempted:"


@dataclass
class _Sum:
    """A running sum where one unknown makes the whole unknown."""

    edges: int = 0
    total_us: int = 0
    count: Optional[int] = 0
    blocked_us: Optional[int] = 0
    runq_us: Optional[int] = 0
    max_us: Optional[int] = 0

    def add(self, w: Wakeup) -> None:
        # Inlined (no helper calls): this runs several times per edge.
        e = w.edge
        self.edges += 1
        self.total_us += e.total_us
        if self.count is not None:
            self.count = None if e.count is None else self.count + e.count
        if self.blocked_us is not None:
            self.blocked_us = None if e.blocked_us is None else self.blocked_us + e.blocked_us
        if self.runq_us is not None:
            self.runq_us = None if e.runq_us is None else self.runq_us + e.runq_us
        if self.max_us is not None:
            m = e.max_us
            if m is None:
                self.max_us = None
            elif m > self.max_us:
                self.max_us = m

    def group(self, key: str, label: str, grand_total: int) -> Group:
        return Group(key=key, label=label, edges=self.edges, count=self.count,
                     total_us=self.total_us, blocked_us=self.blocked_us, runq_us=self.runq_us,
                     max_us=self.max_us, share=share(self.total_us, grand_total))


def share(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def totals(recording: Recording, wakeups: List[Wakeup], threads: int) -> Totals:
    s = _Sum()
    for w in wakeups:
        s.add(w)
    return Totals(off_cpu_us=s.total_us, wakeups=s.count, edges=s.edges,
                  blocked_us=s.blocked_us, runq_us=s.runq_us, threads=threads,
                  lost=dict(recording.lost))


def by_category(wakeups: Iterable[Wakeup], grand_total: int) -> List[Group]:
    sums: Dict[str, _Sum] = {}
    for w in wakeups:
        sums.setdefault(w.category, _Sum()).add(w)
    order = {c.id: i for i, c in enumerate(CATEGORIES)}
    groups = [s.group(cat, CATEGORY_BY_ID[cat].title, grand_total) for cat, s in sums.items()]
    groups.sort(key=lambda g: (-g.total_us, order.get(g.key, len(order))))
    return groups


def waker_key(w: Wakeup) -> Tuple[str, str]:
    """The identity a wakeup is grouped under: the waker's process, or who preempted."""
    if w.waker is not None:
        pid = "" if w.waker.pid is None else str(w.waker.pid)
        return f"{pid}:{w.waker.name}", w.waker.name
    if w.preempted_by is not None:
        return (PREEMPTED_KEY_PREFIX + w.preempted_by.name,
                f"preempted by {w.preempted_by.name}")
    if w.edge.preempted:
        return PREEMPTED_KEY_PREFIX, "preempted"
    return ":?", "(no waker)"


def by_waker(wakeups: Iterable[Wakeup], grand_total: int,
             namer: Optional[Namer] = None) -> List[Group]:
    """Sums per waker process; two processes of one container are told apart by comm."""
    sums: Dict[str, _Sum] = {}
    labels: Dict[str, str] = {}
    comms: Dict[str, str] = {}
    for w in wakeups:
        key, label = waker_key(w)
        if key not in labels:
            labels[key] = label
            comms[key] = _process_comm(w.waker, namer) if w.waker is not None else ""
        sums.setdefault(key, _Sum()).add(w)
    seen: Dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    for key, label in labels.items():
        if seen[label] > 1 and comms[key]:
            labels[key] = f"{label} ({comms[key]})"
    groups = [s.group(k, labels[k], grand_total) for k, s in sums.items()]
    groups.sort(key=lambda g: (-g.total_us, g.key))
    return groups


def _process_comm(party: Party, namer: Optional[Namer]) -> str:
    if namer is not None:
        info = namer.process(Task(party.comm, party.pid, party.tid))
        if info is not None and info.comm:
            return info.comm
    return party.comm


def thread_key(task: Task) -> Tuple[object, ...]:
    """A target thread: by tid when known, else by (pid, comm)."""
    if task.tid is not None:
        return ("tid", task.pid, task.tid)
    return ("comm", task.pid, task.comm)


def by_thread(recording: Recording, wakeups: Iterable[Wakeup], namer: Namer,
              grand_total: int) -> List[ThreadSummary]:
    """One summary per target thread, including threads that only have on-CPU runs."""
    sums: Dict[Tuple[object, ...], _Sum] = {}
    cats: Dict[Tuple[object, ...], Dict[str, _Sum]] = {}
    parties: Dict[Tuple[object, ...], Party] = {}
    for w in wakeups:
        key = thread_key(w.edge.target)
        parties.setdefault(key, w.target)
        sums.setdefault(key, _Sum()).add(w)
        cats.setdefault(key, {}).setdefault(w.category, _Sum()).add(w)
    oncpu: Dict[Tuple[object, ...], OnCpu] = {}
    for run in recording.oncpu:
        key = thread_key(run.task)
        oncpu[key] = run
        if key not in parties:
            parties[key] = namer.party(run.task)
    order = {c.id: i for i, c in enumerate(CATEGORIES)}
    result: List[ThreadSummary] = []
    for key, party in parties.items():
        s = sums.get(key)
        groups = [c.group(cat, CATEGORY_BY_ID[cat].title, grand_total)
                  for cat, c in cats.get(key, {}).items()]
        groups.sort(key=lambda g: (-g.total_us, order.get(g.key, len(order))))
        result.append(ThreadSummary(
            target=party,
            total_us=s.total_us if s else 0,
            count=s.count if s else (0 if _has_counts(recording) else None),
            blocked_us=s.blocked_us if s else None,
            runq_us=s.runq_us if s else None,
            by_category=groups,
            oncpu=oncpu.get(key),
        ))
    result.sort(key=lambda t: (-t.total_us, t.target.comm, t.target.tid or 0))
    return result


def _has_counts(recording: Recording) -> bool:
    return any(e.count is not None for e in recording.edges[:1])
