"""What analysis produces and every renderer reads: the classified, aggregated report.

Renderers import only this module (and ``categories``); they never look at a Recording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Final, List, Literal, Optional, Tuple

from .model import Edge, EnvoyStats, OnCpu, Pending, Throttling

if TYPE_CHECKING:  # both modules build on this one
    from .envoy_counts import EnvoySide
    from .runqueue import Holder

#: Who is responsible for a wakeup, decided by the classifier from the waker's kernel stack:
#: the waker's own code path, an interrupt (the task on the CPU was a bystander), the
#: ksoftirqd thread, or nobody (a preemption). The JSON report carries the string as is.
Cause = Literal["waker", "interrupt", "ksoftirqd", "none"]
CAUSE_WAKER: Final = "waker"
CAUSE_INTERRUPT: Final = "interrupt"
CAUSE_KSOFTIRQD: Final = "ksoftirqd"
CAUSE_NONE: Final = "none"

#: How urgent a finding is; renderers style by it and the JSON report carries the string.
Severity = Literal["info", "warning", "critical"]
INFO: Final = "info"
WARNING: Final = "warning"
CRITICAL: Final = "critical"
#: Most severe first: the order a report lists its findings in.
SEVERITIES: Final[Tuple[Severity, ...]] = (CRITICAL, WARNING, INFO)


@dataclass(frozen=True)
class Party:
    """A waker, target or preemptor as a report shows it.

    ``name`` is the display identity: ``ns/pod/container`` for a pod's process,
    ``host: COMM`` for a host process, ``kernel: COMM`` for a kernel thread, or just the
    comm when the source says nothing more. ``comm`` is the thread's, ``process_comm``
    its process's (its main thread's), when the source describes the process.
    """

    comm: str
    pid: Optional[int]
    tid: Optional[int]
    name: str
    pod: Optional[str] = None
    container: Optional[str] = None
    role: Optional[str] = None  # Envoy thread role when the thread is an Envoy thread
    process_comm: Optional[str] = None


@dataclass
class Wakeup:
    """One classified edge (docs/design.md §3.3 ``wakeups[]``)."""

    edge: Edge
    category: str
    cause: Cause
    rule: str  # the classifier rule that decided, for "why was this classified so"
    target: Party
    waker: Optional[Party]
    preempted_by: Optional[Party] = None
    detail: Optional[str] = None


@dataclass
class Group:
    """A sum of wakeups sharing one key (a category, a waker, a thread)."""

    key: str
    label: str
    edges: int = 0
    count: Optional[int] = None
    total_us: int = 0
    blocked_us: Optional[int] = None
    runq_us: Optional[int] = None
    max_us: Optional[int] = None
    share: float = 0.0  # of the report's total off-CPU time


@dataclass
class ThreadSummary:
    """One target thread: where its off-CPU time went."""

    target: Party
    total_us: int
    count: Optional[int]
    blocked_us: Optional[int]
    runq_us: Optional[int]
    by_category: List[Group] = field(default_factory=list)
    oncpu: Optional[OnCpu] = None


@dataclass
class Finding:
    """A plain sentence an on-call engineer can act on, with the numbers behind it."""

    id: str
    severity: Severity
    title: str
    text: str
    evidence: Dict[str, object] = field(default_factory=dict)


@dataclass
class Totals:
    off_cpu_us: int = 0
    wakeups: Optional[int] = None
    edges: int = 0
    blocked_us: Optional[int] = None
    runq_us: Optional[int] = None
    threads: int = 0
    lost: Dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    source: Dict[str, object]
    totals: Totals
    wakeups: List[Wakeup]  # sorted by total_us, largest first
    by_category: List[Group]
    by_waker: List[Group]
    by_thread: List[ThreadSummary]
    findings: List[Finding]
    pending: List[Pending] = field(default_factory=list)
    throttling: List[Throttling] = field(default_factory=list)
    envoy_stats: List[EnvoyStats] = field(default_factory=list)
    #: Per traced Envoy: what it counted, lined up with the wakeups (``envoy_counts``).
    envoy: List[EnvoySide] = field(default_factory=list)
    #: Who held the CPU while the traced threads waited to run (``runqueue``).
    holders: List[Holder] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    #: The recording's failed sources (source → sentence); not empty: the trace is incomplete.
    failures: Dict[str, str] = field(default_factory=dict)
