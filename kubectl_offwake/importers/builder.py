"""Builds a :class:`Recording` from committed wire records, one record at a time.

The file importer and the Kubernetes log follower share this: the follower feeds records as
the collector's snapshots commit them and may look at ``builder.recording`` at any moment
(edges are merged in place, so the recording is always current). Every record costs O(1):
snapshot deltas of one edge are found through a dict, never by scanning.

A record whose fields have the wrong types is skipped and counted, never fatal: one bad
record must not cost the user the rest of a recording.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union, get_args

from ..analysis.model import (
    Edge,
    EnvoyStats,
    OnCpu,
    Pending,
    ProcessInfo,
    Queued,
    Recording,
    Stack,
    Task,
    Throttling,
)
from ..analysis.vocabulary import traced_field
from ..wire.schema import (
    CgroupPhase,
    CgroupStatRecord,
    ClientRecord,
    EndRecord,
    EnvoyStatsRecord,
    FailureRecord,
    HelloRecord,
    IdentityRecord,
    LogRecord,
    MissingHalf,
    OnCpuRecord,
    PendingRecord,
    ProcessRecord,
    ProgressRecord,
    QueuedRecord,
    SnapshotRecord,
    StackRecord,
    TargetRecord,
    WakeupRecord,
)

_MISSING_VALUES = get_args(MissingHalf)
_PHASES = get_args(CgroupPhase)
_ENVELOPE = ("type", "seq")
#: The exact types of a well-formed wakeup's ids and numbers, and of its optional names.
#: Not bool (an int subclass the careful path refuses) nor float (which it truncates).
_INT_ONLY = frozenset({int})
_INT_OR_NONE = frozenset({int, type(None)})

#: The fields the fast path reads from a wakeup of each kind (wire/schema.py's
#: BlockedWakeupRecord and PreemptedWakeupRecord, less the envelope, snap and state), in
#: the order it unpacks them; ``preempted_by_tid`` is optional and read on its own.
_BLOCKED_NAMES = ("tid", "pid", "comm", "target_stack", "waker_tid", "waker_pid", "waker_comm",
                  "waker_stack", "total_us", "count", "max_us", "blocked_us", "runq_us")
_PREEMPTED_NAMES = ("tid", "pid", "comm", "target_stack", "preempted_by_pid",
                    "preempted_by_comm", "total_us", "count", "max_us", "blocked_us", "runq_us")
_BLOCKED_FIELDS = itemgetter(*_BLOCKED_NAMES)
_PREEMPTED_FIELDS = itemgetter(*_PREEMPTED_NAMES)
#: The identity fields of each kind: the careful path checks they are all hashable.
_TARGET_IDENTITY = ("tid", "pid", "comm", "target_stack", "state")
_BLOCKED_IDENTITY = _TARGET_IDENTITY + ("waker_tid", "waker_pid", "waker_comm", "waker_stack")
_PREEMPTED_IDENTITY = _TARGET_IDENTITY + (
    "preempted_by_pid", "preempted_by_comm", "preempted_by_tid")


class RecordingBuilder:
    """Accumulates wire records into a Recording; call :meth:`finish` for the warnings."""

    def __init__(self, recording: Optional[Recording] = None) -> None:
        self.recording = recording if recording is not None else Recording()
        #: The latest ``progress`` record, for live displays.
        self.progress: Optional[ProgressRecord] = None
        self.records = 0
        self.malformed = 0
        self.snapshots = 0
        self.ended = False
        self._stacks_by_id: Dict[Any, Stack] = {}
        self._unknown_stack_ids: Dict[Any, Stack] = {}
        self._unknown_stack_refs = 0
        self._edges: Dict[tuple, Edge] = {}
        self._tasks: Dict[Tuple[str, Optional[int], Optional[int]], Task] = {}
        self._oncpu: Dict[int, OnCpu] = {}
        self._queued: Dict[tuple, Queued] = {}
        self._pending: Dict[int, int] = {}  # tid -> index in recording.pending
        self._throttling: Dict[Tuple[Any, Any], Throttling] = {}
        self._envoy_stats: Dict[Optional[int], int] = {}  # pid -> index in recording.envoy_stats
        self._target_pids: set = set()
        self._collector_warnings: List[str] = []
        self._emitted: List[str] = []
        #: Each handler takes the TypedDict of its type; the values are as decoded, so every
        #: handler checks or coerces what it uses (a malformed record raises, and is counted).
        self._handlers: Dict[str, Callable[[Any], None]] = {
            "hello": self._hello,
            "client": self._client,
            "target": self._target,
            "progress": self._progress,
            "process": self._process,
            "identity": self._identity,
            "stack": self._stack,
            "wakeup": self._wakeup,
            "oncpu": self._oncpu_record,
            "queued": self._queued_record,
            "pending": self._pending_record,
            "cgroup_stat": self._cgroup_stat,
            "envoy_stats": self._envoy_stats_record,
            "snapshot": self._snapshot,
            "end": self._end,
            "log": self._log,
            "failure": self._failure,
        }

    # -- feeding -------------------------------------------------------------------------

    def add(self, record: Mapping[str, Any]) -> None:
        """Apply one committed record; unknown types are ignored, malformed ones counted."""
        if not isinstance(record, dict):
            return
        handler = self._handlers.get(record.get("type"))  # type: ignore[arg-type]
        if handler is None:
            return
        self.records += 1
        try:
            handler(record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            self.malformed += 1

    def finish(self) -> Recording:
        """The recording with the builder's warnings; safe to call repeatedly."""
        notes = list(self._collector_warnings)
        if self._unknown_stack_refs:
            notes.append(
                f"{self._unknown_stack_refs} record(s) referred to "
                f"{len(self._unknown_stack_ids)} stack id(s) the recording never defined; "
                "they are shown as '[unknown stack N]'"
            )
        if self.malformed:
            notes.append(f"skipped {self.malformed} record(s) with fields of the wrong type")
        recording = self.recording
        for old in self._emitted:  # replace what an earlier finish() added
            if old in recording.warnings:
                recording.warnings.remove(old)
        recording.warnings.extend(notes)
        self._emitted = notes
        return recording

    # -- interning -----------------------------------------------------------------------

    def _task(self, comm: Any, pid: Any, tid: Any) -> Task:
        key = (_str(comm), _opt_int(pid), _opt_int(tid))
        task = self._tasks.get(key)
        if task is None:
            task = Task(*key)
            self._tasks[key] = task
        return task

    def _stack_ref(self, stack_id: Any) -> Stack:
        if isinstance(stack_id, (dict, list)):
            raise TypeError("a stack id must be a scalar")
        stack = self._stacks_by_id.get(stack_id)
        if stack is not None:
            return stack
        self._unknown_stack_refs += 1
        stack = self._unknown_stack_ids.get(stack_id)
        if stack is None:
            stack = self.recording.stacks.intern((f"[unknown stack {stack_id}]",), None, "both")
            self._unknown_stack_ids[stack_id] = stack
        return stack

    def _process_info(self, pid: int, comm: Optional[str] = None) -> ProcessInfo:
        info = self.recording.processes.get(pid)
        if info is None:
            info = ProcessInfo(pid=pid, comm=comm or "")
            self.recording.processes[pid] = info
        return info

    # -- record handlers -----------------------------------------------------------------

    def _hello(self, record: HelloRecord) -> None:
        source = self.recording.source
        for key, value in record.items():
            if key not in _ENVELOPE:
                source[key] = value
        source["kind"] = "offwake"

    def _client(self, record: ClientRecord) -> None:
        """Which command made the recording, and the collector options it has."""
        options = record.get("options") or []
        if not isinstance(options, list):
            raise TypeError("options must be a list")
        self.recording.source["command"] = _str(record["command"])
        self.recording.source["command_options"] = [_str(o) for o in options]

    def _target(self, record: TargetRecord) -> None:
        processes = record["processes"]
        if not isinstance(processes, list):
            raise TypeError("processes must be a list")
        parsed = [_process_fields(p) for p in processes]
        for fields in parsed:
            info = self._process_info(fields["pid"], fields["comm"])
            _apply(info, fields)
            if info.pid not in self._target_pids:
                self._target_pids.add(info.pid)
                self.recording.targets.append(info)
        if "by" in record:
            self.recording.source["target_by"] = record["by"]

    def _progress(self, record: ProgressRecord) -> None:
        lost = record.get("lost")
        lost_counts = _int_dict(lost) if lost is not None else None
        self.progress = record
        if lost_counts is not None and not self.ended:
            self.recording.lost = lost_counts
        if not self.ended:
            self._take_elapsed(record)

    def _process(self, record: ProcessRecord) -> None:
        fields = _process_fields(record)
        _apply(self._process_info(fields["pid"], fields["comm"]), fields)

    def _identity(self, record: IdentityRecord) -> None:
        pid = _int(record["pid"])
        names = {}
        for key in ("pod", "container", "node", "label"):
            if record.get(key) is not None:
                names[key] = _str(record[key])
        info = self._process_info(pid)
        for key, value in names.items():
            setattr(info, key, value)

    def _stack(self, record: StackRecord) -> None:
        frames = record["frames"]
        if not isinstance(frames, list):
            raise TypeError("frames must be a list")
        depth = _opt_int(record.get("kernel_depth"))
        if depth is not None and not 0 <= depth <= len(frames):
            depth = None
        missing = record.get("missing")
        if missing not in _MISSING_VALUES:
            missing = None
        stack_id = record["id"]
        if isinstance(stack_id, (dict, list)):
            raise TypeError("a stack id must be a scalar")
        try:  # the frames of a collector's stack are all strings: intern them as they are
            stack = self.recording.stacks.intern(frames, depth, missing)
        except TypeError:  # a number among them: _str turns it into its text, or refuses
            stack = self.recording.stacks.intern([_str(f) for f in frames], depth, missing)
        self._stacks_by_id[stack_id] = stack

    def _wakeup(self, record: WakeupRecord) -> None:
        """Merge one wakeup delta; O(1), and cheap for the records a collector writes.

        A busy recording has ~100k of these. The record's ``state`` says which of the two
        shapes of wire/schema.py it is; when every field that shape's fast path reads is
        there (one C-level getter) with its exact type (one set comparison), its tasks are
        interned straight by their tuple and its numbers added to its edge or a new one.
        Anything else (another state, a float, a string number, a bool, a missing field, an
        undefined stack id) takes :meth:`_wakeup_careful`, which coerces field by field and
        is the reference this fast path agrees with (tests/unit/test_import_fastpath.py
        checks that).
        """
        state = record.get("state")
        if state == "blocked":
            try:
                (tid, pid, comm, target_id, waker_tid, waker_pid, waker_comm, waker_id,
                 total, count, max_us, blocked, runq) = _BLOCKED_FIELDS(record)
            except KeyError:
                self._wakeup_careful(record)
                return
            if (type(comm) is not str or type(waker_comm) is not str
                    or waker_id is None  # no waker stack: rare, and the careful path's case
                    or {type(tid), type(pid), type(waker_tid), type(waker_pid), type(total),
                        type(count), type(max_us), type(blocked), type(runq)} != _INT_ONLY):
                self._wakeup_careful(record)
                return
            other_key: tuple = (waker_comm, waker_pid, waker_tid)
            preempted = False
        elif state == "preempted":
            try:
                (tid, pid, comm, target_id, by_pid, by_comm,
                 total, count, max_us, blocked, runq) = _PREEMPTED_FIELDS(record)
            except KeyError:
                self._wakeup_careful(record)
                return
            by_tid = record.get("preempted_by_tid")
            if (type(comm) is not str or type(by_comm) is not str
                    or {type(tid), type(pid), type(by_pid), type(total), type(count),
                        type(max_us), type(blocked), type(runq)} != _INT_ONLY
                    or type(by_tid) not in _INT_OR_NONE):
                self._wakeup_careful(record)
                return
            other_key = (by_comm, by_pid, by_tid)
            preempted = True
        else:
            self._wakeup_careful(record)
            return
        # Every field now has its final type, so the raw tuples are the interning keys.
        stacks = self._stacks_by_id
        target_stack = stacks.get(target_id)
        waker_stack = None if preempted else stacks.get(waker_id)
        if target_stack is None or (waker_stack is None and not preempted):
            self._wakeup_careful(record)  # an undefined stack id: counted there
            return
        tasks = self._tasks
        target_key = (comm, pid, tid)
        target = tasks.get(target_key)
        if target is None:
            target = tasks[target_key] = Task(comm, pid, tid)
        other = tasks.get(other_key)
        if other is None:
            other = tasks[other_key] = Task(*other_key)
        if preempted:
            key = (id(target), id(target_stack), id(None), id(None), True, id(other))
        else:
            key = (id(target), id(target_stack), id(other), id(waker_stack), False, id(None))
        edge = self._edges.get(key)  # the key of _merge_edge
        if edge is None:
            edge = Edge(target, target_stack, None, None, total, count, max_us, blocked, runq,
                        True, other) if preempted else Edge(
                target, target_stack, other, waker_stack, total, count, max_us, blocked, runq)
            self._edges[key] = edge
            self.recording.edges.append(edge)
            return
        edge.total_us += total  # Edge.merge, for numbers known to be ints
        edge.count = count if edge.count is None else edge.count + count
        edge.blocked_us = blocked if edge.blocked_us is None else edge.blocked_us + blocked
        edge.runq_us = runq if edge.runq_us is None else edge.runq_us + runq
        if edge.max_us is None or max_us > edge.max_us:
            edge.max_us = max_us

    def _merge_edge(self, fresh: Edge) -> Edge:
        """Add ``fresh`` to the recording, or to the equal edge already in it.

        Interned tasks and stacks are unique objects, so their ids make an exact, cheap key
        equivalent to Edge.key(): equal stacks sent under two ids still merge.
        """
        key = (id(fresh.target), id(fresh.target_stack), id(fresh.waker),
               id(fresh.waker_stack), fresh.preempted, id(fresh.preempted_by))
        edge = self._edges.get(key)
        if edge is None:
            self._edges[key] = fresh
            self.recording.edges.append(fresh)
            return fresh
        edge.merge(fresh)
        return edge

    def _wakeup_careful(self, record: Mapping[str, Any]) -> Edge:
        """Every field coerced and checked on its own: the reference behaviour.

        A record is preempted when its ``state`` says so, else blocked (whatever the state
        says). A list or object in any identity field of its kind makes it malformed (an
        identity is hashed); the other kind's fields are ignored, like unknown ones.
        """
        preempted = record.get("state") == "preempted"
        # TypeError if one is unhashable:
        hash(tuple(map(record.get, _PREEMPTED_IDENTITY if preempted else _BLOCKED_IDENTITY)))
        target = self._task(record["comm"], record.get("pid"), record["tid"])
        target_stack = self._stack_ref(record["target_stack"])
        waker: Optional[Task] = None
        waker_stack: Optional[Stack] = None
        preempted_by: Optional[Task] = None
        if preempted:
            if (record.get("preempted_by_comm") is not None
                    or record.get("preempted_by_pid") is not None):
                preempted_by = self._task(
                    record.get("preempted_by_comm") or "",
                    record.get("preempted_by_pid"),
                    record.get("preempted_by_tid"),
                )
        else:
            if record.get("waker_comm") is not None or record.get("waker_tid") is not None:
                waker = self._task(
                    record.get("waker_comm") or "", record.get("waker_pid"), record.get("waker_tid")
                )
            if record.get("waker_stack") is not None:
                waker_stack = self._stack_ref(record["waker_stack"])
        total = _int(record["total_us"])
        count = _opt_int(record.get("count"))
        max_us = _opt_int(record.get("max_us"))
        blocked = _opt_int(record.get("blocked_us"))
        runq = _opt_int(record.get("runq_us"))
        return self._merge_edge(Edge(target, target_stack, waker, waker_stack, total, count,
                                     max_us, blocked, runq, preempted, preempted_by))

    def _oncpu_record(self, record: OnCpuRecord) -> None:
        tid = _int(record["tid"])
        task = self._task(record["comm"], record.get("pid"), tid)
        count = _int(record["count"])
        total = _int(record["total_us"])
        max_us = _int(record["max_us"])
        hist = record.get("hist_log2_us") or []
        if not isinstance(hist, list):
            raise TypeError("hist_log2_us must be a list")
        hist = [_int(h) for h in hist]
        busy = _opt_int(record.get("max_busy_us"))
        found = self._oncpu.get(tid)
        if found is None:
            found = OnCpu(task, count, total, max_us, hist, busy)
            self._oncpu[tid] = found
            self.recording.oncpu.append(found)
            return
        found.task = task
        found.count += count
        found.total_us += total
        found.max_us = max(found.max_us, max_us)
        if busy is not None:
            found.max_busy_us = busy if found.max_busy_us is None else max(found.max_busy_us,
                                                                           busy)
        merged = found.hist_log2_us
        if len(merged) < len(hist):
            merged.extend([0] * (len(hist) - len(merged)))
        for i, value in enumerate(hist):
            merged[i] += value

    def _queued_record(self, record: QueuedRecord) -> None:
        task = self._task(record.get("comm") or "", record.get("pid"), record["tid"])
        holder_tid = _int(record["holder_tid"])
        holder = None if holder_tid == 0 else self._task(
            record.get("holder_comm") or "", record.get("holder_pid"), holder_tid)
        count = _int(record["count"])
        wait = _int(record["wait_us"])
        max_us = _int(record.get("max_us") or 0)
        key = (task, holder)
        found = self._queued.get(key)
        if found is None:
            self._queued[key] = Queued(task, holder, count, wait, max_us)
            self.recording.queued.append(self._queued[key])
            return
        found.count += count
        found.wait_us += wait
        found.max_us = max(found.max_us, max_us)

    def _pending_record(self, record: PendingRecord) -> None:
        tid = _int(record["tid"])
        task = self._task(record["comm"], record.get("pid"), tid)
        waiting = _int(record["waiting_us"])
        stack = (self._stack_ref(record["target_stack"])
                 if record.get("target_stack") is not None else Stack(()))
        pending = Pending(task, waiting, stack, preempted=record.get("state") == "preempted",
                          whole_run=bool(record.get("whole_run")))
        # Pending is a state, not a delta: a later report of the same thread replaces it.
        _put(self._pending, self.recording.pending, tid, pending)

    def _cgroup_stat(self, record: CgroupStatRecord) -> None:
        phase = record["phase"]
        if phase not in _PHASES:
            raise ValueError("phase must be start or end")
        pid = _opt_int(record.get("pid"))
        cgroup = record.get("cgroup")
        cgroup = _str(cgroup) if cgroup is not None else None
        counters = {
            key: _int(value) for key, value in record.items()
            if key not in ("type", "seq", "pid", "cgroup", "phase")
            and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        key = (pid, cgroup)
        throttling = self._throttling.get(key)
        if throttling is None:
            throttling = Throttling(pid, cgroup)
            self._throttling[key] = throttling
            self.recording.throttling.append(throttling)
        if phase == "start":
            throttling.start = counters
        else:
            throttling.end = counters

    def _envoy_stats_record(self, record: EnvoyStatsRecord) -> None:
        pid = _opt_int(record.get("pid"))
        admin = record.get("admin")
        stats = EnvoyStats(
            pid, _str(admin) if admin is not None else None, _opt_float(record.get("window_s")),
            _int_dict(record.get("delta") or {}), _int_dict(record.get("listeners") or {}))
        # A state, not a delta: a later record of the same Envoy replaces the earlier one.
        _put(self._envoy_stats, self.recording.envoy_stats, pid, stats)

    def _snapshot(self, record: SnapshotRecord) -> None:
        self.snapshots += 1
        if not self.ended:
            self._take_elapsed(record)

    def _end(self, record: EndRecord) -> None:
        totals = _int_dict(record.get("totals") or {})
        lost = _int_dict(record.get("lost") or {})
        warnings = record.get("warnings") or []
        if not isinstance(warnings, list):
            raise TypeError("warnings must be a list")
        self.recording.totals = totals
        self.recording.lost = lost
        self._collector_warnings.extend(_str(w) for w in warnings)
        reason = _str(record["reason"])
        self.recording.source["end_reason"] = reason
        self._take_elapsed(record)
        self.ended = True
        if reason == "error":
            node = self.recording.source.get("node")
            source = _str(node) if isinstance(node, (str, int)) and node != "" else "collector"
            error = record.get("error")
            why = _str(error) if error is not None else "it gave no reason"
            self.recording.failures[source] = f"the collector on node {source} failed: {why}"

    def _failure(self, record: FailureRecord) -> None:
        """The client's word on a failed source: replaces what the stream said of it."""
        self.recording.failures[_str(record["source"])] = _str(record["reason"])

    def _take_elapsed(self, record: Union[ProgressRecord, SnapshotRecord, EndRecord]) -> None:
        """How long the trace has run: ``tracing_s`` (from attach) when the collector sends
        it, else ``elapsed_s`` (from the collector's start, so including the BPF compile)."""
        elapsed = _opt_float(traced_field(record))
        if elapsed is not None:
            self.recording.source["elapsed_s"] = elapsed

    def _log(self, record: LogRecord) -> None:
        self.recording.logs.append(
            {"level": _str(record["level"]), "message": _str(record["message"])}
        )


def _put(positions: Dict[Any, int], items: List[Any], key: Any, item: Any) -> None:
    """Add ``item`` to ``items``, or replace the one added before under ``key``."""
    index = positions.get(key)
    if index is None:
        positions[key] = len(items)
        items.append(item)
    else:
        items[index] = item


# -- field coercion ---------------------------------------------------------------------------


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return int(value)


def _opt_int(value: Any) -> Optional[int]:
    return None if value is None else _int(value)


def _opt_float(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    return float(value)


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _int_dict(value: Any) -> Dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return {str(k): _int(v) for k, v in value.items() if not isinstance(v, (dict, list))}


def _process_fields(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The ProcessInfo fields a process record (or an entry of a target record) carries,
    checked; a field that only one of the two has is taken from either."""
    if not isinstance(record, dict):
        raise TypeError("a process must be an object")
    fields: Dict[str, Any] = {"pid": _int(record["pid"]), "comm": _str(record.get("comm", ""))}
    for key in ("cgroup", "container_id", "runtime", "pod_uid", "exe"):
        if record.get(key) is not None:
            fields[key] = _str(record[key])
    for flag in ("kernel_thread", "gone"):
        if flag in record:
            fields[flag] = bool(record[flag])
    threads = record.get("threads")
    if threads is not None:
        if not isinstance(threads, dict):
            raise TypeError("threads must be an object")
        fields["threads"] = {int(tid): _str(comm) for tid, comm in threads.items()}
    return fields


def _apply(info: ProcessInfo, fields: Dict[str, Any]) -> None:
    for key, value in fields.items():
        if key == "pid":
            continue
        if key == "comm" and not value:
            continue
        if key == "threads":
            info.threads.update(value)
            continue
        setattr(info, key, value)
