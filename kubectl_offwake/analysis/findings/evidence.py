"""Facts the detectors read off wakeups: category ids, counts, who woke the threads."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, cast

from ..categories import CATEGORIES, CATEGORY_BY_ID
from ..envoy_counts import EnvoyCounts
from ..model import Recording
from ..report import CAUSE_WAKER, Wakeup
from ..vocabulary import with_comm


def category(category_id: str) -> str:
    """A category id, checked against the table when the package loads (a renamed
    category fails the import, not silently every finding that reads it)."""
    if category_id not in CATEGORY_BY_ID:
        raise ValueError(f"unknown category {category_id!r}")
    return category_id


UDP = category("udp-receive")
UNIX = category("unix-socket")
EVENTFD = category("eventfd")
FUTEX = category("futex-wake")
ACCEPT = category("tcp-accept")

#: Categories of a preemption: the thread was runnable and waiting, nobody woke it.
PREEMPTIONS = frozenset(c.id for c in CATEGORIES if c.preemption)


def is_preemption(w: Wakeup) -> bool:
    return w.category in PREEMPTIONS


def counts(wakeups: Iterable[Wakeup]) -> Optional[int]:
    """The summed wakeup count, or None when any is unknown (BCC imports have no counts)."""
    values = [w.edge.count for w in wakeups]
    if None in values:
        return None
    return sum(cast(List[int], values))


def waker_label(recording: Recording, w: Wakeup) -> str:
    """The waker's name; its process comm too when it shares a container with the target
    (pilot-agent and Envoy both live in istio-proxy)."""
    assert w.waker is not None
    if w.waker.name == w.target.name and w.waker.pid != w.target.pid:
        info = recording.processes.get(w.waker.pid) if w.waker.pid is not None else None
        comm = info.comm if info is not None and info.comm else w.waker.comm
        return with_comm(w.waker.name, comm)
    return w.waker.name


def top_waker(recording: Recording, wakeups: Sequence[Wakeup]) -> Optional[str]:
    """The waker behind most of these wakeups by its own doing (interrupt bystanders do
    not count); by edges when the source has no counts."""
    weights: Dict[str, int] = defaultdict(int)
    for w in wakeups:
        if w.waker is not None and w.cause == CAUSE_WAKER:
            weights[waker_label(recording, w)] += w.edge.count if w.edge.count is not None else 1
    if not weights:
        return None
    return max(weights.items(), key=lambda kv: (kv[1], kv[0]))[0]


def without_counters(envoy: Optional[EnvoyCounts]) -> str:
    """Why a finding rests on the trace alone: Envoy's admin did not answer, or the source
    has no counters of Envoy's at all (an import, an older recording)."""
    if envoy is not None:
        return "Envoy's counters could not be read"
    return "the recording has no counters of Envoy's"
