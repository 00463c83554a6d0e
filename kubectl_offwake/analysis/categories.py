"""The wakeup categories and causes of docs/design.md §3.4: their ids are a stable interface.

This table is the only place category ids are spelled out; the classifier's rules, the
renderers' legends and the docs all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Category:
    id: str
    title: str
    meaning: str
    preemption: bool = False  # the target was runnable: there is no waker


CATEGORIES: Tuple[Category, ...] = (
    Category("preempted-involuntary", "Preempted (forced)",
             "switched out while runnable, forced (interrupt or return to user)", True),
    Category("preempted-voluntary", "Preempted (resched point)",
             "switched out while runnable at an in-kernel resched point", True),
    Category("unix-socket", "Unix socket", "data or buffer space on a unix socket"),
    Category("tcp-receive", "TCP receive", "TCP data arrived"),
    Category("tcp-close", "TCP close", "peer closed or reset"),
    Category("tcp-accept", "TCP accept", "new connection on a listener"),
    Category("tcp-connect", "TCP connect", "outgoing connect completed"),
    Category("tcp-writable", "TCP writable", "send buffer space"),
    Category("udp-receive", "UDP receive", "UDP datagram (DNS answers land here)"),
    Category("eventfd", "eventfd", "eventfd write (Envoy's cross-thread dispatch)"),
    Category("pipe", "Pipe", "pipe read/write"),
    Category("futex-wake", "Futex wake", "user-space lock or condition variable"),
    Category("timer", "Timer", "a timeout expired"),
    Category("signal", "Signal", "signal delivery"),
    Category("child-exit", "Child exit", "child process exited"),
    Category("io", "I/O completion", "block or other I/O completion"),
    Category("kernel-lock", "Kernel lock", "in-kernel mutex / rwsem / completion"),
    Category("other", "Other", "none of the above"),
)

CATEGORY_BY_ID: Dict[str, Category] = {c.id: c for c in CATEGORIES}

#: Who is really responsible for a wakeup (docs/design.md §3.4).
CAUSES: Dict[str, str] = {
    "waker": "the waker's own code path produced the event",
    "interrupt": "the wake ran in an interrupt; the waker task was a bystander",
    "ksoftirqd": "deferred softirq work in ksoftirqd; the sender is not known",
    "none": "no waker (preemption)",
}

#: Envoy thread roles (``target.role``), in the order a report lists them.
ROLES: Tuple[str, ...] = ("main", "worker", "watchdog", "access-log-flush", "grpc-timer", "other")
