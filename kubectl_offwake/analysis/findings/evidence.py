"""Facts the detectors read off wakeups: category ids, counts, who woke the threads."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, cast

from ..categories import CATEGORIES, CATEGORY_BY_ID
from ..envoy_counts import EnvoyCounts
from ..report import CAUSE_WAKER, Wakeup
from ..vocabulary import process_label


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


def top_waker(wakeups: Sequence[Wakeup]) -> Optional[str]:
    """The waker (by name, as "who woke the threads" lists it) behind most of these wakeups
    by its own doing (interrupt bystanders do not count); by edges when the source has no
    counts."""
    weights: Dict[str, int] = defaultdict(int)
    for w in wakeups:
        if w.waker is not None and w.cause == CAUSE_WAKER:
            weights[process_label(w.waker)] += w.edge.count if w.edge.count is not None else 1
    if not weights:
        return None
    return max(weights.items(), key=lambda kv: (kv[1], kv[0]))[0]


def without_counters(envoy: Optional[EnvoyCounts]) -> str:
    """Why a finding rests on the trace alone: Envoy's admin did not answer, or the source
    has no counters of Envoy's at all (an import, an older recording)."""
    if envoy is not None:
        return "Envoy's counters could not be read"
    return "the recording has no counters of Envoy's"
