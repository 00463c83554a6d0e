"""Turns what the BPF maps hold into wire records: one snapshot of deltas at a time.

Per snapshot, in this order (a reader releases non-delta records at once, and the deltas
when the ``snapshot`` marker commits them): ``process`` for every pid seen for the first
time, ``stack`` for every stack seen for the first time (stacks are sent once and referenced
by id), the ``wakeup``, ``oncpu`` and ``queued`` deltas, ``progress``, then ``snapshot``.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

from ..wire import WireWriter
from ..wire.schema import (
    TRUNCATED_FRAME,
    BlockedWakeupRecord,
    EndFrames,
    LossCounts,
    MissingHalf,
    PendingState,
    PreemptedWakeupRecord,
    ProgressRecord,
    SnapshotRecord,
    StackRecord,
    WakeupRecord,
)
from .bpfprog import ST_BLOCKED, Edge, Program
from .bpfprog import us as _us
from .identity import Identities, exe_of, threads_of
from .runqueue import queued_record
from .sites import SiteIndex, is_system_library
from .symbolize import MODULE_OFFSET, SYMBOL, UNKNOWN, Symbolizer, describe_missing

EFAULT = -14


class FrameCounts:
    """How the frames of the stacks sent resolved (each distinct stack counted once): the
    ``frames`` object of the ``end`` record."""

    def __init__(self) -> None:
        self.user = {SYMBOL: 0, MODULE_OFFSET: 0, UNKNOWN: 0}
        self.kernel = 0
        self.kernel_unknown = 0
        self.cfi = 0
        self.truncated_stacks = 0

    def add(self, kernel: List[str], user_kinds: List[str], cfi: int, truncated: bool) -> None:
        self.kernel += len(kernel)
        self.kernel_unknown += sum(1 for name in kernel if name.startswith("0x"))
        for kind in user_kinds:
            self.user[kind] += 1
        self.cfi += cfi
        self.truncated_stacks += truncated

    def record(self) -> EndFrames:
        return {
            "user": sum(self.user.values()), "user_symbol": self.user[SYMBOL],
            "user_module_offset": self.user[MODULE_OFFSET], "user_unknown": self.user[UNKNOWN],
            "user_cfi": self.cfi, "truncated_stacks": self.truncated_stacks,
            "kernel": self.kernel, "kernel_unknown": self.kernel_unknown,
        }


class Snapshotter:
    """Owns the stack registry and the running totals of one collector run."""

    def __init__(self, program: Program, writer: WireWriter, started_mono: float,
                 min_block_us: float) -> None:
        self.program = program
        self.writer = writer
        self.started_mono = started_mono
        self.attached_mono: Optional[float] = None  # set when tracing begins
        self.min_block_us = min_block_us
        self.sym = Symbolizer(program.bpf_cls)
        self.ids = Identities()
        self.snap = 0
        self.edges_sent = 0
        self._stacks: Dict[Tuple[int, int, int, bool], int] = {}
        self._by_content: Dict[Tuple[Tuple[str, ...], int, Optional[MissingHalf]], int] = {}
        self._kframes: Dict[int, List[str]] = {}
        self._kernel_ids: set = set()
        self._user_ids: set = set()  # (waker map?, id)
        self.symbolize_s = 0.0
        self.active_tids: set = set()
        self.frames = FrameCounts()
        self.sites = SiteIndex(program.add_sites, program.drop_sites, program.sizes.sites)
        self._waker_modules: Dict[int, set] = {}  # waker pid -> module paths indexed

    def warm(self, target_pids: List[int]) -> None:
        """Before tracing: read the targets' symbols and the unwind sites of their frameless
        modules (their stacks are complete from the first event on)."""
        for pid in target_pids:
            self.sym.warm(pid)
        if self.program.own_ustacks:
            for pid in target_pids:
                self.sites.add_process(pid)

    def index_system_libraries(self) -> None:
        """Right after attaching: the unwind sites of every process's system libraries, so
        that any waker's calls into libc have their callers (most share the targets' libc,
        indexed already; the others are read now rather than delay the start)."""
        if self.program.own_ustacks:
            self.sites.add_all_processes(is_system_library)

    def index_new_wakers(self) -> None:
        """Unwind tables for the modules a new waker's stack went through and for its main
        program, as soon as its stacks are stored: the BPF program reports new waker
        stacks, the collector's loop calls this every poll. A stack cut short where it left
        the modules indexed so far reaches one more module each time, until it is whole.
        Only wakers stopped in a system call, i.e. in their own code (an interrupt's
        bystander is anywhere), and not every library they map (an interpreter maps
        dozens, and each costs time)."""
        for pid, ref in self.program.drain_new_wakers():
            ust = self.program.user_stack(ref, waker=True)
            if ust is None or not ust.ips or not _after_syscall(pid, ust.ips[0]):
                continue
            done = self._waker_modules.setdefault(pid, set())
            paths = set(self.sym.modules_of(pid, ust.ips))
            exe = exe_of(pid)
            if exe:
                paths.add(exe)
            if paths - done:
                done.update(paths)
                self.sites.add_process(pid, paths.__contains__)

    # --- identities and stacks ---------------------------------------------------------

    def process(self, pid: int, comm: str = "", with_threads: bool = False) -> None:
        rec = self.ids.new_record(pid, comm, with_threads)
        if rec is not None:
            self.writer.emit(rec)

    def stack_id(self, kid: int, uid: int, pid: int, waker: bool = False) -> int:
        """The wire id of (kernel stack, user stack of ``pid``), sending it the first time.

        A waker's user stack is dropped when its kernel stack shows the wake ran in an
        interrupt: that user stack belongs to whatever task the interrupt happened to hit.
        """
        upid = pid if uid >= 0 else 0
        key = (kid, uid, upid, waker)
        sid = self._stacks.get(key)
        if sid is not None:
            return sid
        t0 = time.monotonic()
        frames: List[str] = []
        kernel = self._kernel_frames(kid)
        frames.extend(kernel)
        if waker and uid >= 0 and in_interrupt(kernel):
            uid = EFAULT  # as if there were no user stack
        kinds: List[str] = []
        cfi, truncated = 0, False
        if uid >= 0:
            self._user_ids.add((waker, uid))
            ust = self.program.user_stack(uid, waker=waker)
            if ust is not None:
                resolved = self.sym.user_frames(pid, ust.ips)
                frames.extend(name for name, _kind in resolved)
                kinds = [kind for _name, kind in resolved]
                cfi, truncated = ust.cfi_frames, ust.truncated
                if truncated:
                    frames.append(TRUNCATED_FRAME)
        seen = self.ids.seen(pid)
        kthread = bool(seen and seen.get("kernel_thread")) or pid == 0
        missing = describe_missing(kid, uid, kthread)
        self.symbolize_s += time.monotonic() - t0
        sid = self.stack_of_frames(frames, len(kernel), missing, kinds, cfi, truncated)
        self._stacks[key] = sid
        return sid

    def stack_of_frames(self, frames: List[str], kernel_depth: int,
                        missing: Optional[MissingHalf], user_kinds: Optional[List[str]] = None,
                        cfi: int = 0, truncated: bool = False) -> int:
        """The wire id of a symbolized stack, sending it the first time. Stacks that differ
        only in offsets inside the same functions read the same: they are sent once."""
        content = (tuple(frames), kernel_depth, missing)
        sid = self._by_content.get(content)
        if sid is None:
            sid = len(self._by_content) + 1
            self._by_content[content] = sid
            self.frames.add(frames[:kernel_depth], user_kinds or [], cfi, truncated)
            rec: StackRecord = {"type": "stack", "id": sid, "frames": frames,
                                "kernel_depth": kernel_depth}
            if missing:
                rec["missing"] = missing
            self.writer.emit(rec)
        return sid

    def _kernel_frames(self, kid: int) -> List[str]:
        if kid < 0:
            return []
        found = self._kframes.get(kid)
        if found is None:
            self._kernel_ids.add(kid)
            ips = self.program.kernel_ips(kid) or []
            found = self.sym.kernel(ips)
            self._kframes[kid] = found
        return found

    # --- records ---------------------------------------------------------------------------

    def _wakeup(self, e: Edge) -> WakeupRecord:
        self.process(e.tgid, e.comm, with_threads=True)
        target_stack = self.stack_id(e.kstack, e.ustack, e.tgid)
        if e.state == ST_BLOCKED:
            self.process(e.waker_tgid, e.waker_comm)
            blocked: BlockedWakeupRecord = {
                "type": "wakeup", "snap": self.snap, "tid": e.tid, "pid": e.tgid,
                "comm": e.comm, "state": "blocked", "target_stack": target_stack,
                "count": e.count, "total_us": _us(e.total_ns), "max_us": _us(e.max_ns),
                "blocked_us": _us(e.blocked_ns), "runq_us": _us(e.runq_ns),
                "waker_tid": e.waker_tid, "waker_pid": e.waker_tgid, "waker_comm": e.waker_comm,
                "waker_stack": self.stack_id(e.waker_kstack, e.waker_ustack, e.waker_tgid,
                                             waker=True),
            }
            return blocked
        ppid = self.ids.tgid(e.preempt_pid) if e.preempt_pid else 0
        self.process(ppid, e.preempt_comm)
        preempted: PreemptedWakeupRecord = {
            "type": "wakeup", "snap": self.snap, "tid": e.tid, "pid": e.tgid, "comm": e.comm,
            "state": "preempted", "target_stack": target_stack, "count": e.count,
            "total_us": _us(e.total_ns), "max_us": _us(e.max_ns),
            "blocked_us": _us(e.blocked_ns), "runq_us": _us(e.runq_ns),
            "preempted_by_pid": ppid, "preempted_by_tid": e.preempt_pid,
            "preempted_by_comm": e.preempt_comm,
        }
        return preempted

    def take(self, counters: Dict[str, int]) -> None:
        """Read and clear the maps and write one committed snapshot."""
        self.snap += 1
        self.sym.new_snapshot()
        self.ids.cgroups.new_snapshot()  # before the drain: a walk from here on sees its wakes
        edges = self.program.drain_edges()
        oncpu = self.program.drain_oncpu()
        for e in edges:  # before any record: a waker may come first as a preemptor
            if e.state == ST_BLOCKED:
                self.ids.note_cgroup(e.waker_tgid, e.waker_cgroup_id)
        self.active_tids.update(e.tid for e in edges)
        self.active_tids.update(r.tid for r in oncpu)
        wakeups = merge_wakeups([self._wakeup(e) for e in edges])
        for rec in wakeups:
            self.writer.emit(rec)
        self.edges_sent += len(wakeups)
        for row in oncpu:
            hist = list(row.hist)
            while hist and not hist[-1]:
                hist.pop()
            self.writer.emit({
                "type": "oncpu", "snap": self.snap, "tid": row.tid, "pid": row.tgid,
                "comm": row.comm, "count": row.count, "total_us": _us(row.total_ns),
                "max_us": _us(row.max_ns), "hist_log2_us": hist,
                "max_busy_us": _us(row.max_busy_ns),
            })
        for q in self.program.drain_queued():
            if q.holder_tgid:
                self.process(q.holder_tgid, q.holder_comm)
            self.writer.emit(queued_record(q, self.snap))
        now = time.monotonic()
        elapsed = round(now - self.started_mono, 3)
        use = self.program.map_use()
        use["agg"] = [len(edges), self.program.sizes.agg]
        use["stacks"] = [max(len(self._kernel_ids), len(self._user_ids)),
                         self.program.sizes.stack_storage]
        progress: ProgressRecord = {
            "type": "progress", "elapsed_s": elapsed, "switches": counters.get("switch_out", 0),
            "wakeups": counters.get("wakeup", 0), "edges": self.edges_sent,
            "lost": lost_summary(counters), "map_use": use,
        }
        snapshot: SnapshotRecord = {"type": "snapshot", "snap": self.snap, "elapsed_s": elapsed}
        if self.attached_mono is not None:
            progress["tracing_s"] = snapshot["tracing_s"] = round(now - self.attached_mono, 3)
        self.writer.emit(progress)
        self.writer.emit(snapshot)
        self.writer.flush()

    def pending(self, target_pids: List[int], attached_mono: float,
                now_ns: Optional[int] = None) -> int:
        """``pending`` records for target threads still off the CPU; returns how many.

        Two kinds: threads that left the CPU during the trace and have not run since (their
        switch-out stacks are in the start map), and threads that never ran during the whole
        trace (blocked since before it began: a worker stuck on a lock). The latter have no
        BPF stack; their kernel stack comes from /proc/PID/task/TID/stack, and the time is
        at least the trace's length (``whole_run``).
        """
        now_ns = now_ns if now_ns is not None else time.monotonic_ns()
        n = 0
        seen = set(self.active_tids)
        for w in self.program.waiting():
            seen.add(w.tid)
            waiting_ns = now_ns - w.off_ns
            if waiting_ns < self.min_block_us * 1000 or waiting_ns < 0:
                continue
            if not os.path.exists(f"/proc/{w.tgid}/task/{w.tid}"):
                continue
            state: PendingState = "preempted"
            if w.state == ST_BLOCKED:
                state = "runq" if w.wake_ns else "blocked"
            self.process(w.tgid, w.comm, with_threads=True)
            self.writer.emit({
                "type": "pending", "tid": w.tid, "pid": w.tgid, "comm": w.comm, "state": state,
                "waiting_us": _us(waiting_ns),
                "target_stack": self.stack_id(w.kstack, w.ustack, w.tgid),
            })
            n += 1
        whole_us = int((time.monotonic() - attached_mono) * 1e6)
        for pid in target_pids:
            for tid, comm in sorted(threads_of(pid).items()):
                if tid in seen:
                    continue
                if _thread_state(pid, tid) not in ("S", "D"):
                    continue
                frames = _proc_stack(pid, tid)
                sid = self.stack_of_frames(frames, len(frames), "user" if frames else "both")
                self.writer.emit({
                    "type": "pending", "tid": tid, "pid": pid, "comm": comm, "state": "blocked",
                    "waiting_us": whole_us, "target_stack": sid, "whole_run": True,
                })
                n += 1
        return n

    @property
    def stacks_sent(self) -> int:
        return len(self._by_content)


#: Frames that show a kernel stack ran in (or on the way out of) a hardware interrupt.
_IRQ_FRAMES = ("asm_sysvec_", "sysvec_", "__sysvec_", "asm_common_interrupt",
               "common_interrupt", "irq_exit", "__irq_exit_rcu", "do_IRQ",
               "apic_timer_interrupt", "ret_from_intr", "handle_irq_event")


def in_interrupt(kernel_frames: List[str]) -> bool:
    return any(f.startswith(_IRQ_FRAMES) for f in kernel_frames)


#: The numbers of a wakeup record; every other field is part of what the edge is.
_NUMBERS = frozenset({"count", "total_us", "blocked_us", "runq_us", "max_us"})


def merge_wakeups(records: List[WakeupRecord]) -> List[WakeupRecord]:
    """One record per distinct edge as the client will see it (BPF keys on stack ids, and
    stacks that differ only in offsets, or in a dropped bystander user stack, read the same)."""
    out: Dict[tuple, WakeupRecord] = {}
    for rec in records:
        key = tuple((k, v) for k, v in rec.items() if k not in _NUMBERS)
        have = out.get(key)
        if have is None:
            out[key] = rec
            continue
        have["count"] += rec["count"]
        have["total_us"] += rec["total_us"]
        have["blocked_us"] += rec["blocked_us"]
        have["runq_us"] += rec["runq_us"]
        have["max_us"] = max(have["max_us"], rec["max_us"])
    return list(out.values())


def _after_syscall(pid: int, ip: int) -> bool:
    """Whether the code right before ``ip`` is a ``syscall`` instruction (where a thread in
    a system call stopped)."""
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(ip - 2)
            return mem.read(2) == b"\x0f\x05"
    except (OSError, ValueError, OverflowError):
        return False


def _thread_state(pid: int, tid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            text = f.read()
        return text[text.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def _proc_stack(pid: int, tid: int) -> List[str]:
    """Kernel frames of a sleeping thread, leaf first, as the kernel lists them."""
    frames = ["__schedule", "schedule"]  # /proc/.../stack leaves out the scheduler itself
    try:
        with open(f"/proc/{pid}/task/{tid}/stack") as f:
            for line in f:
                name = line.split("]", 1)[-1].strip().split("+", 1)[0]
                if name:
                    frames.append(name)
    except OSError:
        return []
    return frames if len(frames) > 2 else []


def lost_summary(counters: Dict[str, int]) -> LossCounts:
    return {
        "stack_eexist": counters.get("stack_eexist", 0),
        "stack_enomem": counters.get("stack_enomem", 0),
        "map_full": counters.get("agg_full", 0) + counters.get("start_full", 0)
        + counters.get("oncpu_full", 0) + counters.get("queued_full", 0),
        "agg_full": counters.get("agg_full", 0),
        "start_full": counters.get("start_full", 0),
        "oncpu_full": counters.get("oncpu_full", 0),
        "queued_full": counters.get("queued_full", 0),
    }
