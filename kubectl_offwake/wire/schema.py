"""The one description of the wire records: one TypedDict per record, in stream order.

Every record is one JSON object on one line with ``type`` and an increasing ``seq``.
Snapshots are deltas: the ``wakeup``/``oncpu`` records between two ``snapshot`` markers
add to what came before, and a ``snapshot`` record commits them. A reader that meets a
truncated stream keeps everything up to the last commit (``snapshot`` or ``end``).

Each record type below is a TypedDict whose required keys are what a writer always sends
and whose optional keys (the ``?`` in its docstring) what it may leave out; the collector's
writers and the importers' readers are annotated with them, so mypy checks both sides
against this file, and tests/unit/test_wire_schema.py checks what the collector really
writes against the same classes at run time. :data:`RECORD_SHAPES` lists them by type;
:data:`RECORD_TYPES` says which fields a reader cannot do without (fewer: a reader keeps
what it can of a record from an older or foreign writer).

A new field goes into its record's TypedDict (required only if every writer sends it);
a new record type gets a block of its own here, in stream order, and a line in
:data:`WireRecord`, :data:`RECORD_SHAPES` and :data:`RECORD_TYPES` (the tests check that
the three agree). Writers then build it as a dict literal and pass it to ``emit``.

Standard library only, Python 3.9: the collector imports this under the node's system
Python. So optional keys are spelled as a ``total=False`` subclass of the required ones
(``NotRequired`` needs 3.11), which also keeps ``__required_keys__`` right at run time.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Literal, Optional, Tuple, TypedDict, Union

SCHEMA_VERSION = 1

#: The last user frame of a stack whose frame-pointer walk was stopped (see ``stack``).
TRUNCATED_FRAME = "[truncated: frame-pointer loop]"


class _Envelope(TypedDict, total=False):
    #: Written by :class:`~kubectl_offwake.wire.writer.WireWriter`; records the client adds
    #: itself (``identity``) may have none.
    seq: int


# -- hello --------------------------------------------------------------------------------------


#: Where the collector's kernel headers came from (collector/headers.py has the order).
HeadersSource = Literal["host", "kheaders", "fallback", "explicit"]


class _HeadersFields(TypedDict):
    source: HeadersSource
    path: str


class HeadersInfo(_HeadersFields, total=False):
    """``hello.headers``: source, path (the tree BCC compiled against), note?"""

    note: str


class _HelloFields(_Envelope):
    type: Literal["hello"]
    schema: int
    tool_version: str
    collector: str
    kernel: str
    node: str
    started: float
    interval_s: float


class HelloRecord(_HelloFields, total=False):
    """schema, tool_version, collector, kernel, node, started (unix s), interval_s,
    duration_s?, min_block_us?, headers {source, path, note?}?, bcc_version? (null: bcc
    did not import), python?, map_sizes? {option: entries} (the BPF map sizes of this
    run, by the option of :data:`MAP_SIZE_OPTIONS` that sets each)"""

    duration_s: float
    min_block_us: float
    headers: HeadersInfo
    bcc_version: Optional[str]
    python: str
    map_sizes: Dict[str, int]


# -- client -------------------------------------------------------------------------------------


class ClientRecord(_Envelope):
    """command (how a user runs it again: "kubectl offwake local"), options (the collector
    options that command takes, e.g. the map sizes) — written by the client right after
    ``hello``, so what a report advises about a recording names options that exist"""

    type: Literal["client"]
    command: str
    options: List[str]


# -- target -------------------------------------------------------------------------------------


class ProcessPlace(TypedDict, total=False):
    """Where a process runs, as /proc shows it (each left out when unknown): exe?,
    cgroup?, container_id?, runtime?, pod_uid? — what the client names it by"""

    exe: str
    cgroup: str
    container_id: str
    runtime: str
    pod_uid: str


#: What named a target: its pid, its comm (or executable name), or its container's id.
TargetBy = Literal["pid", "comm", "container-id"]


class _TargetProcessFields(TypedDict):
    pid: int
    comm: str
    by: TargetBy


class TargetProcess(_TargetProcessFields, ProcessPlace, total=False):
    """One traced process: pid, comm, by ("pid" | "comm" | "container-id": what named it),
    and where it runs (:class:`ProcessPlace`)"""


class TargetRecord(_Envelope):
    """processes [TargetProcess], by (one ``by`` for all, or the list of those used)"""

    type: Literal["target"]
    processes: List[TargetProcess]
    by: Union[TargetBy, List[TargetBy]]


# -- progress -----------------------------------------------------------------------------------

#: ``progress.lost`` / ``end.lost``: counter name (see :data:`LOSS_COUNTERS`) -> count.
LossCounts = Dict[str, int]


class _ProgressFields(_Envelope):
    type: Literal["progress"]
    elapsed_s: float
    switches: int
    wakeups: int


class ProgressRecord(_ProgressFields, total=False):
    """elapsed_s (since the collector started), tracing_s? (since tracing began),
    switches, wakeups, edges?, lost {stack_eexist, stack_enomem, map_full, ...}?,
    map_use {name: [used, size]}?"""

    tracing_s: float
    edges: int
    lost: LossCounts
    map_use: Dict[str, List[int]]


# -- process ------------------------------------------------------------------------------------


class _ProcessFields(_Envelope):
    type: Literal["process"]
    pid: int
    comm: str
    kernel_thread: bool


class ProcessRecord(_ProcessFields, ProcessPlace, total=False):
    """pid, comm, kernel_thread, where it runs (:class:`ProcessPlace`: cgroup?,
    container_id?, runtime?, pod_uid?, exe?), threads {tid: comm}?, gone? (true: exited
    before the collector could read /proc)"""

    threads: Dict[str, str]
    gone: bool


# -- identity -----------------------------------------------------------------------------------


class _IdentityFields(_Envelope):
    type: Literal["identity"]
    pid: int


class IdentityRecord(_IdentityFields, total=False):
    """pid, pod? ("ns/name"), container?, node?, label? — written by the client when it
    names a process through the Kubernetes API (or the demo, for its stand-ins)"""

    pod: str
    container: str
    node: str
    label: str


# -- stack --------------------------------------------------------------------------------------

#: Which half of a stack BPF could not read.
MissingHalf = Literal["kernel", "user", "both"]


class _StackFields(_Envelope):
    type: Literal["stack"]
    id: int
    frames: List[str]
    kernel_depth: int


class StackRecord(_StackFields, total=False):
    """id, frames [str, leaf first], kernel_depth (how many leading frames are kernel),
    missing? ("kernel" | "user" | "both"). A user frame is a symbol, or ``module+0xOFFSET``
    for any address inside a mapping (ELF virtual address for files; ``[heap]+0x..``,
    ``anon+0x..`` otherwise), or ``0xADDRESS`` only outside every mapping. A last frame
    ``[truncated: frame-pointer loop]`` (:data:`TRUNCATED_FRAME`) marks a user stack whose
    frame-pointer chain stopped moving up the stack (a frame pointer below the frame before
    it, or the same return address twice): the walk stopped there, the frames above are
    unknown."""

    missing: MissingHalf


# -- wakeup -------------------------------------------------------------------------------------


class _WakeupFields(_Envelope):
    type: Literal["wakeup"]
    snap: int
    tid: int
    pid: int
    comm: str
    target_stack: int
    count: int
    total_us: int
    max_us: int
    blocked_us: int
    runq_us: int


class BlockedWakeupRecord(_WakeupFields):
    """snap, tid, pid, comm, state "blocked", waker_tid, waker_pid, waker_comm,
    target_stack (id), waker_stack (id), count, total_us, max_us, blocked_us, runq_us —
    the thread slept until the waker woke it"""

    state: Literal["blocked"]
    waker_tid: int
    waker_pid: int
    waker_comm: str
    waker_stack: int


class _PreemptedWakeupFields(_WakeupFields):
    state: Literal["preempted"]
    preempted_by_pid: int
    preempted_by_comm: str


class PreemptedWakeupRecord(_PreemptedWakeupFields, total=False):
    """snap, tid, pid, comm, state "preempted", target_stack (id), count, total_us,
    max_us, blocked_us, runq_us, preempted_by_pid, preempted_by_tid?, preempted_by_comm —
    the thread was switched out runnable (nobody woke it: it waited for the CPU)"""

    preempted_by_tid: int


#: One ``wakeup`` record: which of the two its ``state`` says.
WakeupRecord = Union[BlockedWakeupRecord, PreemptedWakeupRecord]



# -- oncpu --------------------------------------------------------------------------------------


class _OnCpuFields(_Envelope):
    type: Literal["oncpu"]
    snap: int
    tid: int
    pid: int
    comm: str
    count: int
    total_us: int
    max_us: int
    hist_log2_us: List[int]


class OnCpuRecord(_OnCpuFields, total=False):
    """snap, tid, pid, comm, count, total_us, max_us, hist_log2_us [counts], max_busy_us?
    (the longest busy period: CPU time between two sleeps, runs split by preemptions added
    up; collectors before it was added do not send it)"""

    max_busy_us: int


# -- queued -------------------------------------------------------------------------------------


class QueuedRecord(_Envelope):
    """snap, tid, pid, comm, holder_tid, holder_pid, holder_comm, count, wait_us, max_us —
    a target thread's run-queue waits (after a wake, or a whole preemption) by who held the
    CPU: the task that ran on it just before the target got it back (holder_tid 0: the CPU
    was idle; collector/runqueue.py)"""

    type: Literal["queued"]
    snap: int
    tid: int
    pid: int
    comm: str
    holder_tid: int
    holder_pid: int
    holder_comm: str
    count: int
    wait_us: int
    max_us: int


# -- pending ------------------------------------------------------------------------------------

PendingState = Literal["blocked", "runq", "preempted"]


class _PendingFields(_Envelope):
    type: Literal["pending"]
    tid: int
    pid: int
    comm: str
    state: PendingState
    waiting_us: int
    target_stack: int


class PendingRecord(_PendingFields, total=False):
    """tid, pid, comm, state ("blocked" | "runq": woken, not yet run | "preempted"),
    waiting_us, target_stack (id) — still off the CPU at the end;
    whole_run? (true: off the CPU for the whole trace, waiting_us is then a lower bound)"""

    whole_run: bool


# -- cgroup_stat --------------------------------------------------------------------------------

CgroupPhase = Literal["start", "end"]


class _CgroupStatFields(_Envelope):
    type: Literal["cgroup_stat"]
    pid: int
    cgroup: Optional[str]
    phase: CgroupPhase
    nr_periods: int
    nr_throttled: int
    throttled_usec: int


class CgroupStatRecord(_CgroupStatFields, total=False):
    """pid, cgroup (null: not known), phase ("start" | "end"), nr_periods, nr_throttled,
    throttled_usec, file? (the cpu.stat read)"""

    file: str


# -- envoy_stats ---------------------------------------------------------------------------------


class _EnvoyStatsFields(_Envelope):
    type: Literal["envoy_stats"]
    pid: int
    listeners: Dict[str, int]


class EnvoyStatsRecord(_EnvoyStatsFields, total=False):
    """pid, listeners {"host:port": listening sockets} (Envoy's TCP listeners at the end),
    admin? (the admin address read), window_s? (seconds between the two reads),
    delta? {counter: rise} — Envoy's admin counters (collector/envoy_stats.py FAMILIES)
    that rose between a read just before tracing and one after the last snapshot; admin,
    window_s and delta are absent when the admin could not be read"""

    admin: str
    window_s: float
    delta: Dict[str, int]


# -- snapshot -----------------------------------------------------------------------------------


class _SnapshotFields(_Envelope):
    type: Literal["snapshot"]
    snap: int
    elapsed_s: float


class SnapshotRecord(_SnapshotFields, total=False):
    """snap, elapsed_s, tracing_s? — commits the deltas sent since the previous snapshot"""

    tracing_s: float


# -- end ----------------------------------------------------------------------------------------

EndReason = Literal["duration", "signal", "target-exit", "error"]


class EndFrames(TypedDict):
    """``end.frames``: the frames of the stacks sent, each distinct stack once. User frames
    by what they resolved to (``user_symbol``, ``user_module_offset``, ``user_unknown``: a
    bare address outside every mapping; ``user`` is their sum), ``user_cfi`` callers found
    from unwind tables rather than frame pointers, ``truncated_stacks`` stacks ending in
    :data:`TRUNCATED_FRAME`, ``kernel`` frames and ``kernel_unknown`` ones kallsyms could
    not name."""

    user: int
    user_symbol: int
    user_module_offset: int
    user_unknown: int
    user_cfi: int
    truncated_stacks: int
    kernel: int
    kernel_unknown: int


class _EndFields(_Envelope):
    type: Literal["end"]
    reason: EndReason
    elapsed_s: float
    totals: Dict[str, int]
    lost: LossCounts
    warnings: List[str]


class EndRecord(_EndFields, total=False):
    """reason ("duration" | "signal" | "target-exit" | "error"),
    elapsed_s, tracing_s?, totals {switches, wakeups, ...}, lost {...}, warnings [str],
    error? (reason "error": the one sentence that says what failed; readers show this,
    never a guess from the warnings), frames? (:class:`EndFrames`)"""

    tracing_s: float
    error: str
    frames: EndFrames


# -- log ----------------------------------------------------------------------------------------

LogLevel = Literal["debug", "info", "warning", "error"]


class LogRecord(_Envelope):
    """level ("debug" | "info" | "warning" | "error"), message"""

    type: Literal["log"]
    level: LogLevel
    message: str


# -- failure ------------------------------------------------------------------------------------


class FailureRecord(_Envelope):
    """source (a node name), reason (one sentence naming it) — written by the client when a
    collector failed in a way its own stream cannot say (its pod's status, a crash, a stream
    cut short); the recording is then incomplete"""

    type: Literal["failure"]
    source: str
    reason: str


# -- all of them --------------------------------------------------------------------------------

#: Any record a writer sends.
WireRecord = Union[
    HelloRecord, ClientRecord, TargetRecord, ProgressRecord, ProcessRecord, IdentityRecord,
    StackRecord, BlockedWakeupRecord, PreemptedWakeupRecord, OnCpuRecord, QueuedRecord,
    PendingRecord, CgroupStatRecord, EnvoyStatsRecord, SnapshotRecord, EndRecord, LogRecord,
    FailureRecord,
]

#: The TypedDict(s) of every record type, in the order of this file.
RECORD_SHAPES: Dict[str, Tuple[type, ...]] = {
    "hello": (HelloRecord,),
    "client": (ClientRecord,),
    "target": (TargetRecord,),
    "progress": (ProgressRecord,),
    "process": (ProcessRecord,),
    "identity": (IdentityRecord,),
    "stack": (StackRecord,),
    "wakeup": (BlockedWakeupRecord, PreemptedWakeupRecord),
    "oncpu": (OnCpuRecord,),
    "queued": (QueuedRecord,),
    "pending": (PendingRecord,),
    "cgroup_stat": (CgroupStatRecord,),
    "envoy_stats": (EnvoyStatsRecord,),
    "snapshot": (SnapshotRecord,),
    "end": (EndRecord,),
    "log": (LogRecord,),
    "failure": (FailureRecord,),
}

#: The fields a reader cannot do without, per record type (a subset of every shape's
#: required keys). Types not listed are skipped by readers.
RECORD_TYPES: Dict[str, FrozenSet[str]] = {
    "hello": frozenset({"schema"}),
    "client": frozenset({"command"}),
    "target": frozenset({"processes"}),
    "progress": frozenset({"elapsed_s"}),
    "process": frozenset({"pid", "comm"}),
    "identity": frozenset({"pid"}),
    "stack": frozenset({"id", "frames"}),
    "wakeup": frozenset({"tid", "comm", "target_stack", "total_us"}),
    "oncpu": frozenset({"tid", "comm", "count", "total_us", "max_us"}),
    "queued": frozenset({"tid", "holder_tid", "count", "wait_us"}),
    "pending": frozenset({"tid", "comm", "waiting_us"}),
    "cgroup_stat": frozenset({"phase"}),
    "envoy_stats": frozenset({"pid"}),
    "snapshot": frozenset({"snap"}),
    "end": frozenset({"reason"}),
    "log": frozenset({"level", "message"}),
    "failure": frozenset({"source", "reason"}),
}

#: Records that commit the deltas before them.
COMMIT_TYPES = frozenset({"snapshot", "end"})
#: Records that are deltas, held back until committed.
DELTA_TYPES = frozenset({"wakeup", "oncpu", "queued", "pending"})


class WireError(Exception):
    """Input that cannot be read as a recording; the message is one sentence for a user."""


#: The collector's loss counters (``progress.lost`` / ``end.lost``): what each means and the
#: collector option that makes room. The live display and the findings both read this.
LOSS_COUNTERS: Dict[str, Tuple[str, str]] = {
    "stack_eexist": ("stacks lost to hash collisions in the stack map", "--stack-storage-size"),
    "stack_enomem": ("stacks lost because the stack map was full", "--stack-storage-size"),
    "agg_full": ("wakeups not counted because the aggregation map was full", "--agg-size"),
    "start_full": ("switch-outs not recorded because the start map was full", "--start-size"),
    "oncpu_full": ("on-CPU runs lost because the on-CPU map was full", "--oncpu-size"),
    "queued_full": ("run-queue waits not attributed because the queued map was full",
                    "--oncpu-size"),
    "map_full": ("records lost because a map was full", "--agg-size"),
    # BCC offwaketime's count of stacks it could not display (an imported capture)
    "stack_lost": ("stacks lost (the stack map was full or collided)", "--stack-storage-size"),
}
#: The collector options that size its BPF maps, with what each sizes: every command that
#: runs the collector passes them through, so every loss above can be acted on.
MAP_SIZE_OPTIONS: Dict[str, str] = {
    "--stack-storage-size": "Stack map entries (raise it when stacks are lost).",
    "--agg-size": "Aggregation map entries (raise it when wakeups are lost).",
    "--start-size": "Switch-out map entries (raise it when switch-outs are lost).",
    "--oncpu-size": "On-CPU map entries, and run-queue holder entries (raise it when on-CPU "
                    "runs or run-queue waits are lost).",
}
#: ``map_full`` is the collector's sum of these counters; it is shown only when they are absent.
LOSS_SUM_PARTS = ("agg_full", "start_full", "oncpu_full", "queued_full")


def distinct_losses(lost: Dict[str, int]) -> Dict[str, int]:
    """Non-zero loss counters, without the ``map_full`` sum when its parts are present."""
    out = {k: v for k, v in lost.items() if isinstance(v, int) and v > 0}
    if "map_full" in out and any(p in lost for p in LOSS_SUM_PARTS):
        del out["map_full"]
    return out


def loss_sentences(lost: Dict[str, int]) -> List[str]:
    """One sentence per non-zero loss counter, naming the collector option to raise."""
    notes = []
    for key, value in sorted(distinct_losses(lost).items()):
        meaning, flag = LOSS_COUNTERS.get(key, (key.replace("_", " "), ""))
        advice = f"; raise {flag}" if flag else ""
        notes.append(f"{value:,} {meaning}{advice}")
    return notes
