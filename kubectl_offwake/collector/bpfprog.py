"""Loads bpf/offwake.bpf.c with BCC and reads its maps.

The only module that talks to BCC's map API; everything above it sees plain Python values.
The source is found beside this module (inside the zipapp) or in the package's ``bpf/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .cfi import Rule
from .sites import SiteKey

SOURCE_NAME = "offwake.bpf.c"

#: Counter slots of the per-CPU ``counters`` array, in the order the C source numbers them.
COUNTERS = (
    "switch_out", "wakeup", "noop_wake", "short", "stack_eexist", "stack_enomem",
    "agg_full", "start_full", "oncpu_full", "switch_in", "kcache_hit", "kcache_mismatch",
    "kstack_walks", "stack_overflow", "wstack_eexist", "wstack_enomem",
    "ustack_truncated", "queued_full",
)
#: Marks a stack id that lives in the overflow stack map (see the C source).
OVERFLOW_BIT = 0x40000000
#: Marks a shallow kernel stack of a preemption (the pstacks map).
PREEMPT_BIT = 0x20000000

ST_BLOCKED = 0
ST_PREEMPTED = 1
#: Flags of a stored user stack (the C source's UST_*).
UST_TRUNCATED = 1
UST_CFI_SHIFT = 8


@dataclass
class MapSizes:
    stack_storage: int = 16384
    agg: int = 16384
    start: int = 16384
    targets: int = 256
    oncpu: int = 4096
    sites: int = 262144  # unwind sites of frameless modules (allocated as used)


def bpf_source() -> str:
    """The BPF C text: beside this module inside the zipapp, else in the package's ``bpf/``
    (a link to the repository's ``bpf/`` in a checkout, a copy in an installed wheel)."""
    try:
        res = resources.files(__package__).joinpath(SOURCE_NAME)
        if res.is_file():
            return res.read_text()
    except (OSError, TypeError, ValueError):
        pass
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bpf", SOURCE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{SOURCE_NAME} is neither beside the collector nor in the "
                                "package's bpf/")
    with open(path) as f:
        return f.read()


def mmap_min_addr() -> int:
    """The lowest address a process may map (vm.mmap_min_addr): the program takes a user
    frame pointer below it as the end of the chain without reading it. 0 (read them all)
    when unknown."""
    try:
        with open("/proc/sys/vm/mmap_min_addr") as f:
            return max(0, int(f.read().strip()))
    except (OSError, ValueError):
        return 0


def cflags(min_block_us: float, sizes: MapSizes) -> List[str]:
    return [
        f"-DMIN_BLOCK_NS={int(min_block_us * 1000)}ULL",
        f"-DSTACK_STORAGE_SIZE={sizes.stack_storage}",
        f"-DAGG_SIZE={sizes.agg}",
        f"-DSTART_SIZE={sizes.start}",
        f"-DTARGETS_SIZE={sizes.targets}",
        f"-DONCPU_SIZE={sizes.oncpu}",
        f"-DQUEUED_SIZE={sizes.oncpu}",  # a few holders per target thread, drained per snapshot
        f"-DSITES_SIZE={sizes.sites}",
        f"-DMMAP_MIN_ADDR={mmap_min_addr()}UL",
        "-Wno-macro-redefined",
    ]


def us(ns: int) -> int:
    """Nanoseconds from a map as whole microseconds (rounded), as the wire records carry."""
    return int((ns + 500) // 1000)


def _int(key: Any) -> int:
    """A scalar map key: BCC hands out ctypes values or plain ints depending on the call."""
    return int(getattr(key, "value", key))


def _comm(raw: Any) -> str:
    data = bytes(raw)
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class Edge:
    tid: int
    tgid: int
    state: int
    comm: str
    kstack: int
    ustack: int
    waker_tid: int
    waker_tgid: int
    waker_comm: str
    waker_kstack: int
    waker_ustack: int
    preempt_pid: int
    preempt_comm: str
    count: int
    total_ns: int
    max_ns: int
    blocked_ns: int
    runq_ns: int
    #: The waker's cgroup v2 id as the program took it at the wake (0: unknown): names a
    #: waker that exited before its /proc could be read.
    waker_cgroup_id: int = 0


@dataclass
class UserStack:
    """One stored user stack: addresses leaf first; whether the walk stopped at a
    frame-pointer loop; how many callers came from CFI rather than frame pointers."""

    ips: List[int]
    truncated: bool = False
    cfi_frames: int = 0


@dataclass
class OnCpuRow:
    tid: int
    tgid: int
    comm: str
    count: int
    total_ns: int
    max_ns: int
    hist: List[int]
    #: The longest busy period: CPU time between two sleeps, preemptions included.
    max_busy_ns: int = 0


@dataclass
class QueuedRow:
    """A target thread's run-queue waits behind one holder of the CPU (tid 0: idle)."""

    tid: int
    tgid: int
    comm: str
    holder_tid: int
    holder_tgid: int
    holder_comm: str
    count: int
    wait_ns: int
    max_ns: int


@dataclass
class Waiting:
    tid: int
    tgid: int
    comm: str
    state: int
    off_ns: int
    wake_ns: int
    kstack: int
    ustack: int


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever libbcc prints (it writes warnings with printf) to stderr: stdout carries
    only wire records."""
    sys.stdout.flush()
    libc = None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        pass
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        if libc is not None:
            libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


#: Builds where the kernel walks user stacks (frame pointers only, no CFI sites): our own
#: walk reads x86-64 registers through bpf_task_pt_regs (Linux 5.15+, kernel BTF).
KERNEL_USTACKS = "-DKERNEL_USTACKS"
#: Builds without the waker's cgroup id (bpf_get_current_cgroup_id: Linux 4.18+).
NO_CGROUP_ID = "-DNO_CGROUP_ID"

#: What each fallback build gives up, in the order they are tried: a kernel too old for one
#: helper is too old for those after it in this list (bpf_task_pt_regs came in 5.15,
#: bpf_get_current_cgroup_id in 4.18).
FALLBACKS = (
    (KERNEL_USTACKS, "the user-stack walker did not load on this kernel ({exc}); the kernel "
     "walks user stacks instead (frame pointers only: callers of functions without them are "
     "missing)"),
    (NO_CGROUP_ID, "this kernel has no bpf_get_current_cgroup_id ({exc}); a waker that exits "
     "before the collector reads its /proc is named by its comm only, not by its pod"),
)


def compile_program(bpf_cls: Any, text: str, flags: List[str], notes: List[str]) -> Any:
    """Compile and attach; where a helper the full program uses is missing (an older kernel,
    no BTF), build again without what needs it (:data:`FALLBACKS`) rather than fail the
    trace. ``notes`` says what was given up."""
    if platform.machine() not in ("x86_64", "amd64") and KERNEL_USTACKS not in flags:
        flags = [*flags, KERNEL_USTACKS]
    fallbacks = [(flag, note) for flag, note in FALLBACKS if flag not in flags]
    while True:
        try:
            return bpf_cls(text=text, cflags=flags)
        except Exception as exc:  # noqa: BLE001 - BCC raises plain Exception on load errors
            if not fallbacks:
                raise
            flag, note = fallbacks.pop(0)
            notes.append(note.format(exc=exc))
            flags = [*flags, flag]


class Program:
    """A compiled, attached offwake program."""

    def __init__(self, min_block_us: float, sizes: MapSizes,
                 extra_cflags: Sequence[str] = ()) -> None:
        from bcc import BPF  # imported here so the rest of the collector loads without bcc

        self.bpf_cls = BPF
        self.sizes = sizes
        t0 = time.monotonic()
        self.notes: List[str] = []
        with stdout_to_stderr():
            self.bpf = compile_program(BPF, bpf_source(),
                                       cflags(min_block_us, sizes) + list(extra_cflags),
                                       self.notes)
        self.load_s = time.monotonic() - t0
        self._targets = self.bpf["targets"]
        self._tgidbits = self.bpf["tgidbits"]
        self._counters = self.bpf["counters"]
        self._agg = self.bpf["agg"]
        self._oncpu = self.bpf["oncpu"]
        self._queued = self.bpf["queued"]
        self._start = self.bpf["start"]
        self._kstacks = self.bpf["kstacks"]
        self._kstacks2 = self.bpf["kstacks2"]
        self._pstacks = self.bpf["pstacks"]
        #: Whether user stacks are ours (CFI sites, loop marks) or the kernel's walk.
        try:
            self._ustore = self.bpf["ustore"]
            self.own_ustacks = True
        except KeyError:
            self.own_ustacks = False
        if self.own_ustacks:
            self._wustore = self.bpf["wustore"]
            self._sites = self.bpf["sites"]
            self._newwakers = self.bpf["newwakers"]
        else:
            self._ustacks = self.bpf["ustacks"]
            self._ustacks2 = self.bpf["ustacks2"]
            self._wustacks = self.bpf["wustacks"]
            self._wustacks2 = self.bpf["wustacks2"]
        self._batch_ok = True

    def add_sites(self, sites: Dict[SiteKey, Rule]) -> int:
        """Writes unwind sites (collector/sites.py) into the program's ``sites`` map; returns
        how many went in (none where the kernel walks user stacks)."""
        if not self.own_ustacks or not sites:
            return 0
        table = self._sites
        items = list(sites.items())
        keys = (table.Key * len(items))()
        values = (table.Leaf * len(items))()
        for i, ((page_off, before, after), rule) in enumerate(items):
            keys[i].page_off, keys[i].before, keys[i].after = page_off, before, after
            values[i].cfa_off, values[i].bp_off = rule.cfa_off, rule.bp_off
            values[i].cfa_reg = rule.cfa_reg
        try:
            table.items_update_batch(keys, values)
        except Exception:  # noqa: BLE001 - kernels without batch ops: one at a time
            for i in range(len(items)):
                table[keys[i]] = values[i]
        self._sites_changed()
        return len(items)

    def _sites_changed(self) -> None:
        """The program caches site lookups per CPU (negative ones too) under a generation
        number: a new one makes them look again."""
        gen = self.bpf["sitegen"]
        key = gen.Key(0)
        gen[key] = gen.Leaf((int(gen[key].value) + 1) & 0xFFFFFFFF)

    def drop_sites(self, keys: Sequence[SiteKey]) -> None:
        """Removes sites found ambiguous after they were written."""
        if not self.own_ustacks:
            return
        for page_off, before, after in keys:
            key = self._sites.Key()
            key.page_off, key.before, key.after = page_off, before, after
            try:
                del self._sites[key]
            except KeyError:
                pass
        self._sites_changed()

    def set_targets(self, tgids: Sequence[int]) -> None:
        for tgid in tgids:
            self._targets[self._targets.Key(tgid)] = self._targets.Leaf(1)
            self._set_bit(tgid, True)

    def remove_target(self, tgid: int) -> None:
        try:
            del self._targets[self._targets.Key(tgid)]
        except KeyError:
            pass
        self._set_bit(tgid, False)

    def _set_bit(self, tgid: int, on: bool) -> None:
        """The probes filter by the ``tgidbits`` bitmap (one bit per tgid); only this
        process writes it."""
        bits = self._tgidbits
        key = bits.Key(tgid >> 6)
        word = int(bits[key].value)
        mask = 1 << (tgid & 63)
        bits[key] = bits.Leaf(word | mask if on else word & ~mask)

    def counters(self) -> Dict[str, int]:
        out = {}
        for i, name in enumerate(COUNTERS):
            values = self._counters[self._counters.Key(i)]
            out[name] = int(sum(values))
        return out

    def _drain(self, table: Any) -> Iterator[Tuple[Any, Any]]:
        """Read and delete every entry (atomically per entry when the kernel can)."""
        if self._batch_ok:
            try:
                yield from table.items_lookup_and_delete_batch()
                return
            except Exception:  # noqa: BLE001 - old kernels: fall back to read-then-delete
                self._batch_ok = False
        items = list(table.items())
        for k, _v in items:
            try:
                del table[k]
            except KeyError:
                pass
        yield from items

    def drain_edges(self) -> List[Edge]:
        out = []
        for k, v in self._drain(self._agg):
            out.append(Edge(
                tid=k.tid, tgid=k.tgid, state=k.state, comm=_comm(k.comm),
                kstack=k.kstack, ustack=k.ustack,
                waker_tid=k.waker_tid, waker_tgid=k.waker_tgid,
                waker_comm=_comm(k.waker_comm),
                waker_kstack=k.waker_kstack, waker_ustack=k.waker_ustack,
                preempt_pid=k.preempt_pid, preempt_comm=_comm(k.preempt_comm),
                count=v.count, total_ns=v.total_ns, max_ns=v.max_ns,
                blocked_ns=v.blocked_ns, runq_ns=v.runq_ns, waker_cgroup_id=int(v.waker_cgid),
            ))
        return out

    def drain_new_wakers(self) -> List[Tuple[int, int]]:
        """(tgid, stack) of processes that woke a target with a user stack not seen before
        (their own code, or whatever an interrupt happened to hit), since the last call."""
        if not self.own_ustacks:
            return []
        return [(_int(k), _int(v)) for k, v in self._drain(self._newwakers)]

    def drain_oncpu(self) -> List[OnCpuRow]:
        out = []
        for k, v in self._drain(self._oncpu):
            out.append(OnCpuRow(
                tid=_int(k), tgid=v.tgid, comm=_comm(v.comm), count=v.count,
                total_ns=v.total_ns, max_ns=v.max_ns, hist=[int(x) for x in v.hist],
                max_busy_ns=int(v.max_busy_ns),
            ))
        return out

    def drain_queued(self) -> List[QueuedRow]:
        return [QueuedRow(tid=k.tid, tgid=k.tgid, comm=_comm(k.comm), holder_tid=k.holder_tid,
                          holder_tgid=k.holder_tgid, holder_comm=_comm(k.holder_comm),
                          count=int(v.count), wait_ns=int(v.wait_ns), max_ns=int(v.max_ns))
                for k, v in self._drain(self._queued)]

    def waiting(self) -> List[Waiting]:
        out = []
        for k, v in self._start.items():
            if not v.off_ts:
                continue  # the thread is on the CPU (entries are reused in place)
            out.append(Waiting(
                tid=_int(k), tgid=v.tgid, comm=_comm(v.comm), state=v.state,
                off_ns=v.off_ts, wake_ns=v.wake_ts, kstack=v.kstack, ustack=v.ustack,
            ))
        return out

    def map_use(self) -> Dict[str, List[int]]:
        """Entries in use per map (the start map is small; agg is counted when drained)."""
        return {"start": [len(self._start.items()), self.sizes.start]}  # one per thread seen

    def kernel_ips(self, stack_id: int) -> Optional[List[int]]:
        if stack_id >= 0 and stack_id & PREEMPT_BIT:
            return self._ips(self._pstacks, stack_id & ~PREEMPT_BIT)
        if stack_id >= 0 and stack_id & OVERFLOW_BIT:
            return self._ips(self._kstacks2, stack_id & ~OVERFLOW_BIT)
        return self._ips(self._kstacks, stack_id)

    def user_stack(self, stack_id: int, waker: bool = False) -> Optional[UserStack]:
        if stack_id < 0:
            return None
        if self.own_ustacks:
            table = self._wustore if waker else self._ustore
            try:
                rec = table[table.Key(stack_id)]
            except KeyError:
                return None
            n = min(int(rec.n), len(rec.ip))
            return UserStack([int(rec.ip[i]) for i in range(n)],
                             truncated=bool(rec.flags & UST_TRUNCATED),
                             cfi_frames=int(rec.flags) >> UST_CFI_SHIFT)
        main, overflow = ((self._wustacks, self._wustacks2) if waker
                          else (self._ustacks, self._ustacks2))
        if stack_id & OVERFLOW_BIT:
            ips = self._ips(overflow, stack_id & ~OVERFLOW_BIT)
        else:
            ips = self._ips(main, stack_id)
        return None if ips is None else UserStack(ips)

    @staticmethod
    def _ips(table: Any, stack_id: int) -> Optional[List[int]]:
        if stack_id < 0:
            return None
        try:
            leaf = table[table.Key(stack_id)]
        except KeyError:
            return None
        out = []
        for ip in leaf.ip:
            if not ip:
                break
            out.append(int(ip))
        return out

    def close(self) -> None:
        try:
            with stdout_to_stderr():
                self.bpf.cleanup()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
