"""The recording model every input is turned into, and every analysis reads.

One model for all sources (our wire stream, BCC ``offwaketime`` text and folded output) so
classification and rendering never care where data came from. Fields a source cannot
provide are ``None`` (BCC's output has no counts, no tgids and no blocked/run-queue split).
Stacks are interned: a busy recording repeats a few thousand stacks across many edges.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Stack:
    """Frames leaf first: the kernel frames, then the user frames.

    ``kernel_depth`` is how many leading frames are kernel frames, or ``None`` when the
    source did not mark the boundary (BCC text without ``-d``). ``missing`` names the
    half the tracer failed to capture ("kernel", "user" or "both").
    """

    frames: Tuple[str, ...]
    kernel_depth: Optional[int] = None
    missing: Optional[str] = None

    @property
    def kernel_frames(self) -> Tuple[str, ...]:
        if self.kernel_depth is None:
            return self.frames
        return self.frames[: self.kernel_depth]

    @property
    def user_frames(self) -> Tuple[str, ...]:
        if self.kernel_depth is None:
            return ()
        return self.frames[self.kernel_depth :]


class StackTable:
    """Interns stacks and their frame strings so equal stacks are one object."""

    def __init__(self) -> None:
        self._stacks: Dict[Stack, Stack] = {}

    def intern(
        self, frames: tuple[str, ...] | list[str], kernel_depth: Optional[int] = None,
        missing: Optional[str] = None,
    ) -> Stack:
        key = Stack(tuple(map(sys.intern, frames)), kernel_depth, missing)
        found = self._stacks.get(key)
        if found is None:
            self._stacks[key] = key
            found = key
        return found

    def __len__(self) -> int:
        return len(self._stacks)


@dataclass(frozen=True)
class Task:
    """A thread as a source names it: comm always, tgid and tid when known."""

    comm: str
    pid: Optional[int] = None
    tid: Optional[int] = None


@dataclass
class ProcessInfo:
    """What the collector (and the Kubernetes naming step) know of a host process."""

    pid: int
    comm: str
    cgroup: Optional[str] = None
    container_id: Optional[str] = None
    runtime: Optional[str] = None
    pod_uid: Optional[str] = None
    kernel_thread: bool = False
    exe: Optional[str] = None
    threads: Dict[int, str] = field(default_factory=dict)
    pod: Optional[str] = None  # "namespace/name", filled from the API
    container: Optional[str] = None
    node: Optional[str] = None
    label: Optional[str] = None  # a display name given by whoever named the process
    gone: bool = False  # it exited before the collector could read /proc (wire: process.gone)


@dataclass
class Edge:
    """One distinct (waker stack, target stack) pair and the off-CPU time it explains.

    ``preempted`` is true when the target was switched out while runnable: then there is
    no waker, and ``preempted_by`` names who took the CPU when the source knows.
    """

    target: Task
    target_stack: Stack
    waker: Optional[Task]
    waker_stack: Optional[Stack]
    total_us: int
    count: Optional[int] = None
    max_us: Optional[int] = None
    blocked_us: Optional[int] = None
    runq_us: Optional[int] = None
    preempted: bool = False
    preempted_by: Optional[Task] = None

    def key(self) -> tuple:
        """Identity for merging snapshot deltas of the same edge."""
        return (
            self.target, self.target_stack, self.waker, self.waker_stack,
            self.preempted, self.preempted_by,
        )

    def merge(self, other: Edge) -> None:
        self.total_us += other.total_us
        self.count = _add(self.count, other.count)
        self.blocked_us = _add(self.blocked_us, other.blocked_us)
        self.runq_us = _add(self.runq_us, other.runq_us)
        if other.max_us is not None:
            self.max_us = other.max_us if self.max_us is None else max(self.max_us, other.max_us)


def _add(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@dataclass
class OnCpu:
    """A target thread's on-CPU run lengths (switch-in to switch-out)."""

    task: Task
    count: int
    total_us: int
    max_us: int
    hist_log2_us: List[int] = field(default_factory=list)
    #: The longest busy period: CPU time the thread used between two sleeps, its runs
    #: split by preemptions added up (``None``: the source did not record it).
    max_busy_us: Optional[int] = None


@dataclass
class Queued:
    """A target thread's waits in the run queue behind one holder of the CPU: the task
    that ran on that CPU just before the target got it back (``None``: the CPU was idle)."""

    task: Task
    holder: Optional[Task]
    count: int
    wait_us: int
    max_us: int


@dataclass
class Pending:
    """A target thread still off the CPU when tracing stopped."""

    task: Task
    waiting_us: int
    stack: Stack
    preempted: bool = False
    whole_run: bool = False  # off the CPU for the whole trace: waiting_us is a lower bound


@dataclass
class Throttling:
    """CPU throttling counters of a target's cgroup at the start and end of the run."""

    pid: Optional[int]
    cgroup: Optional[str]
    start: Dict[str, int] = field(default_factory=dict)
    end: Dict[str, int] = field(default_factory=dict)

    def delta(self, counter: str) -> Optional[int]:
        if counter in self.start and counter in self.end:
            return self.end[counter] - self.start[counter]
        return None


@dataclass
class EnvoyStats:
    """What Envoy itself said about the traced window: its admin counters' rise and its
    listening sockets (the collector's ``envoy_stats`` record)."""

    pid: Optional[int]
    #: The admin address read, or ``None`` when the counters could not be read.
    admin: Optional[str] = None
    #: Seconds between the two reads of the counters (a little more than the trace).
    window_s: Optional[float] = None
    #: Counters that rose, by how much (``listener.0.0.0.0_15006.downstream_cx_total``: 292).
    delta: Dict[str, int] = field(default_factory=dict)
    #: Listening sockets per TCP address at the end (reuse_port: one per worker).
    listeners: Dict[str, int] = field(default_factory=dict)


@dataclass
class Recording:
    """Everything one trace (or one imported capture) says."""

    source: Dict[str, object] = field(default_factory=dict)
    processes: Dict[int, ProcessInfo] = field(default_factory=dict)
    targets: List[ProcessInfo] = field(default_factory=list)
    edges: List[Edge] = field(default_factory=list)
    oncpu: List[OnCpu] = field(default_factory=list)
    queued: List[Queued] = field(default_factory=list)
    pending: List[Pending] = field(default_factory=list)
    throttling: List[Throttling] = field(default_factory=list)
    envoy_stats: List[EnvoyStats] = field(default_factory=list)
    totals: Dict[str, int] = field(default_factory=dict)
    lost: Dict[str, int] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    logs: List[Dict[str, str]] = field(default_factory=list)
    stacks: StackTable = field(default_factory=StackTable)
    #: Sources that did not finish their trace (a node's collector, the local one) → one
    #: sentence naming the source and why. Not empty: the recording is incomplete, and
    #: whatever ran it failed (exit 1), whatever it still shows.
    failures: Dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.failures

    @property
    def has_data(self) -> bool:
        """Whether anything was traced at all (a failed start leaves nothing to report)."""
        return bool(self.edges or self.oncpu or self.pending)

    def process_of(self, task: Optional[Task]) -> Optional[ProcessInfo]:
        if task is None or task.pid is None:
            return None
        return self.processes.get(task.pid)
