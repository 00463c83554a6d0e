"""Sums of classified wakeups: by category, by waker, by target thread, and totals.

Counts, blocked/run-queue splits and maxima are ``None`` when the source has none (BCC's
output has no counts): a sum containing an unknown stays unknown rather than pretending
to be a smaller number. Shares are of the report's total off-CPU time.

Wakeups are first grouped into lists, then each list is summed field by field with the
built-in ``sum``: with 100k edges this is several times faster than a running sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, cast

from .categories import CATEGORIES, CATEGORY_BY_ID
from .model import Edge, OnCpu, Recording, Task
from .naming import Namer
from .report import Group, Party, ThreadSummary, Totals, Wakeup

PREEMPTED_KEY_PREFIX = "preempted:"
_CATEGORY_ORDER = {c.id: i for i, c in enumerate(CATEGORIES)}


@dataclass
class Sums:
    """The sums of a list of edges."""

    edges: int
    total_us: int
    count: Optional[int]
    blocked_us: Optional[int]
    runq_us: Optional[int]
    max_us: Optional[int]

    def group(self, key: str, label: str, grand_total: int) -> Group:
        return Group(key=key, label=label, edges=self.edges, count=self.count,
                     total_us=self.total_us, blocked_us=self.blocked_us, runq_us=self.runq_us,
                     max_us=self.max_us, share=share(self.total_us, grand_total))


def sums(edges: Sequence[Edge]) -> Sums:
    """Field sums of edges; a field with any unknown value sums to None."""
    counts = [e.count for e in edges]
    blocked = [e.blocked_us for e in edges]
    runq = [e.runq_us for e in edges]
    maxima = [e.max_us for e in edges]
    return Sums(
        edges=len(edges),
        total_us=sum([e.total_us for e in edges]),
        count=_sum(counts),
        blocked_us=_sum(blocked),
        runq_us=_sum(runq),
        max_us=None if None in maxima else max(cast(List[int], maxima), default=0),
    )


def _sum(values: List[Optional[int]]) -> Optional[int]:
    """The sum, or None when any value is unknown (``None in`` is a fast C scan)."""
    if None in values:
        return None
    return sum(cast(List[int], values))


def share(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def totals(recording: Recording, wakeups: Sequence[Wakeup], threads: int) -> Totals:
    s = sums([w.edge for w in wakeups])
    return Totals(off_cpu_us=s.total_us, wakeups=s.count, edges=s.edges,
                  blocked_us=s.blocked_us, runq_us=s.runq_us, threads=threads,
                  lost=dict(recording.lost))


def _category_groups(by_cat: Dict[str, List[Edge]], grand_total: int) -> List[Group]:
    groups = [sums(es).group(cat, CATEGORY_BY_ID[cat].title, grand_total)
              for cat, es in by_cat.items()]
    groups.sort(key=lambda g: (-g.total_us, _CATEGORY_ORDER.get(g.key, len(_CATEGORY_ORDER))))
    return groups


def by_category(wakeups: Iterable[Wakeup], grand_total: int) -> List[Group]:
    lists: Dict[str, List[Edge]] = {}
    for w in wakeups:
        lists.setdefault(w.category, []).append(w.edge)
    return _category_groups(lists, grand_total)


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
    lists: Dict[str, List[Edge]] = {}
    labels: Dict[str, str] = {}
    comms: Dict[str, str] = {}
    keys: Dict[Tuple[int, int, bool], Tuple[str, str]] = {}  # party identity -> key
    for w in wakeups:
        ident = (id(w.waker), id(w.preempted_by), w.edge.preempted)
        found = keys.get(ident)
        if found is None:
            found = keys[ident] = waker_key(w)
        key = found[0]
        edges = lists.get(key)
        if edges is None:
            edges = lists[key] = []
            labels[key] = found[1]
            comms[key] = _process_comm(w.waker, namer) if w.waker is not None else ""
        edges.append(w.edge)
    seen: Dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    for key, label in labels.items():
        if seen[label] > 1 and comms[key]:
            labels[key] = f"{label} ({comms[key]})"
    groups = [sums(es).group(k, labels[k], grand_total) for k, es in lists.items()]
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
    cats: Dict[Tuple[object, ...], Dict[str, List[Edge]]] = {}
    parties: Dict[Tuple[object, ...], Party] = {}
    keys: Dict[int, Tuple[object, ...]] = {}  # id(target party) -> thread key
    for w in wakeups:
        key = keys.get(id(w.target))
        if key is None:
            key = keys[id(w.target)] = thread_key(w.edge.target)
        per = cats.get(key)
        if per is None:
            per = cats[key] = {}
            parties.setdefault(key, w.target)
        per.setdefault(w.category, []).append(w.edge)
    oncpu: Dict[Tuple[object, ...], OnCpu] = {}
    for run in recording.oncpu:
        key = thread_key(run.task)
        oncpu[key] = run
        if key not in parties:
            parties[key] = namer.party(run.task)
    counted = any(e.count is not None for e in recording.edges[:1])
    result: List[ThreadSummary] = []
    for key, party in parties.items():
        per = cats.get(key, {})
        s = sums([e for es in per.values() for e in es]) if per else None
        result.append(ThreadSummary(
            target=party,
            total_us=s.total_us if s else 0,
            count=s.count if s else (0 if counted else None),
            blocked_us=s.blocked_us if s else None,
            runq_us=s.runq_us if s else None,
            by_category=_category_groups(per, grand_total),
            oncpu=oncpu.get(key),
        ))
    result.sort(key=lambda t: (-t.total_us, t.target.comm, t.target.tid or 0))
    return result
