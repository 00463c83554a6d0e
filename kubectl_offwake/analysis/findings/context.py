"""What every detector reads: the report's wakeups and threads, grouped per traced process.

Detectors work per traced process (one Envoy per pod), so a report over several pods says
which pod each finding is about. The grouping is done once, here. A per-process detector is
a function of the context and one :class:`Process` that returns at most one finding;
:func:`each_process` runs it over every process, which is the loop all of them share. A
report-wide detector (lost data, a thread stuck at the end) looks at the context once and
:func:`once` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import wraps
from typing import Callable, Dict, List, Optional, Tuple

from ..aggregate import Index, Sums
from ..envoy_counts import EnvoyCounts
from ..model import OnCpu, Recording
from ..naming import Namer
from ..report import Finding, Party, Report, ThreadSummary, Wakeup
from ..roles import WORKER
from ..runqueue import Holder
from ..vocabulary import traced_seconds


def thread_id(party: Party) -> object:
    """A thread's identity within its process: the tid, else the comm (BCC imports)."""
    return party.tid or party.comm


@dataclass(frozen=True)
class Cell:
    """One target thread's wakeups of one category, with their sums (from the index)."""

    target: Party
    category: str
    wakeups: List[Wakeup]
    sums: Sums


@dataclass(frozen=True)
class ThreadRun:
    """A traced thread and its on-CPU runs."""

    target: Party
    oncpu: OnCpu


@dataclass(frozen=True)
class Process:
    """One traced process: its wakeups (by category, and those of its workers), threads,
    who held the CPU while they waited to run, and what Envoy counted (when it is one)."""

    key: str
    name: str
    pid: Optional[int]
    cells: Tuple[Cell, ...]
    threads: Tuple[ThreadSummary, ...]
    by_category: Dict[str, List[Wakeup]]
    workers: List[Wakeup]  # wakeups whose target has the worker role
    holders: Tuple[Holder, ...] = ()
    #: Envoy's own counts over the trace; None for a source without them (BCC imports,
    #: a process that is no Envoy). ``envoy.read`` says whether its admin answered.
    envoy: Optional[EnvoyCounts] = None

    def of(self, category: str) -> List[Wakeup]:
        """The process's wakeups of one category."""
        return self.by_category.get(category, [])

    def woken(self, category: str, role: str) -> List[Wakeup]:
        """The wakeups of one category whose target thread has ``role``."""
        return [w for w in self.of(category) if w.target.role == role]

    @property
    def counted(self) -> Optional[EnvoyCounts]:
        """Envoy's counts when its admin was read (else only its sockets are known, or
        nothing: see :func:`.evidence.without_counters` for saying which)."""
        return self.envoy if self.envoy is not None and self.envoy.read else None

    @property
    def runs(self) -> List[ThreadRun]:
        """The threads that have on-CPU runs, in the report's thread order."""
        return [ThreadRun(t.target, t.oncpu) for t in self.threads if t.oncpu is not None]


@dataclass(frozen=True)
class Context:
    """The recording, its report, and the traced processes the detectors iterate over."""

    recording: Recording
    report: Report
    namer: Namer
    index: Index
    duration_s: Optional[float]
    processes: Tuple[Process, ...]

    @property
    def several(self) -> bool:
        """Whether the report covers more than one traced process (then findings name it)."""
        return len({p.name for p in self.processes}) > 1

    def where(self, proc: Process) -> str:
        """' in NAME' when the report covers several processes, else ''."""
        return f" in {proc.name}" if self.several else ""


def build(recording: Recording, report: Report, namer: Namer, idx: Index) -> Context:
    """The context of one report: its index's cells and its threads filed per process,
    in the order the processes first appear (cells first, then threads)."""
    gathered: Dict[str, _Gathering] = {}

    def process_of(target: Party) -> _Gathering:
        key = _process_key(target)
        found = gathered.get(key)
        if found is None:
            found = gathered[key] = _Gathering(key, _process_name(target), target.pid)
        return found

    for (tk, category), ws in idx.cells.items():
        target = idx.threads[tk]
        proc = process_of(target)
        proc.cells.append(Cell(target, category, ws, idx.cell_sums[(tk, category)]))
        proc.by_category.setdefault(category, []).extend(ws)
        if target.role == WORKER:
            proc.workers.extend(ws)
    for t in report.by_thread:
        process_of(t.target).threads.append(t)
    for h in report.holders:
        found = gathered.get(_key(h.pid, h.process))
        if found is not None:
            found.holders.append(h)
    envoy = {side.counts.pid: side.counts for side in report.envoy}
    for g in gathered.values():
        if g.pid is not None:
            g.envoy = envoy.get(g.pid)
    processes = tuple(g.freeze() for g in gathered.values())
    return Context(recording, report, namer, idx, traced_seconds(recording.source), processes)


@dataclass
class _Gathering:
    """A process's pieces while the report is being filed."""

    key: str
    name: str
    pid: Optional[int]
    cells: List[Cell] = field(default_factory=list)
    threads: List[ThreadSummary] = field(default_factory=list)
    by_category: Dict[str, List[Wakeup]] = field(default_factory=dict)
    workers: List[Wakeup] = field(default_factory=list)
    holders: List[Holder] = field(default_factory=list)
    envoy: Optional[EnvoyCounts] = None

    def freeze(self) -> Process:
        return Process(self.key, self.name, self.pid, tuple(self.cells), tuple(self.threads),
                       self.by_category, self.workers, tuple(self.holders), self.envoy)


def _process_key(party: Party) -> str:
    """The traced process a thread belongs to. Without tgids (BCC imports) every Envoy
    thread (one with a role) is taken to belong to one Envoy."""
    if party.pid is not None:
        return _key(party.pid, party.name)
    return ":envoy" if party.role is not None else f":{party.name}"


def _key(pid: Optional[int], name: str) -> str:
    return f"{pid}:{name}" if pid is not None else f":{name}"


def _process_name(party: Party) -> str:
    return "envoy" if party.pid is None and party.role is not None else party.name


#: A detector as the package runs it: the context in, its findings out.
Detector = Callable[[Context], List[Finding]]
#: A check of one traced process: at most one finding about it.
ProcessCheck = Callable[[Context, Process], Optional[Finding]]
#: A check of the whole report: at most one finding.
ReportCheck = Callable[[Context], Optional[Finding]]


def each_process(check: ProcessCheck) -> Detector:
    """Runs ``check`` on every traced process, in order: the loop all detectors share."""

    @wraps(check)
    def run(ctx: Context) -> List[Finding]:
        found = (check(ctx, proc) for proc in ctx.processes)
        return [f for f in found if f is not None]

    return run


def once(check: ReportCheck) -> Detector:
    """Runs a report-wide ``check`` once."""

    @wraps(check)
    def run(ctx: Context) -> List[Finding]:
        found = check(ctx)
        return [] if found is None else [found]

    return run
