"""Identity of a host process from /proc: what the client needs to name it by pod and container.

Read once per process and cached: a waker that exits before the next snapshot is still named
if we saw it alive, and one that we never saw alive keeps the comm BPF captured and, from the
cgroup id BPF took at its wake (:mod:`.cgroupids`), its cgroup, container and pod.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

from ..wire.schema import ProcessPlace, ProcessRecord
from .cgroupids import CgroupPaths
from .cgroups import CgroupInfo, parse_cgroup_path, read_cgroup

PF_KTHREAD = 0x00200000
PROC = "/proc"


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def tgid_of(tid: int, proc: str = PROC) -> Optional[int]:
    """The process a thread belongs to (``/proc/TID`` exists for every thread, listed or not)."""
    text = read_text(f"{proc}/{tid}/status")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("Tgid:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def stat_fields(pid: int, proc: str = PROC) -> Optional[list]:
    """Fields of /proc/PID/stat after the comm (field 3 is index 0)."""
    text = read_text(f"{proc}/{pid}/stat")
    if not text or ")" not in text:
        return None
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int, proc: str = PROC) -> Optional[int]:
    """Start time in clock ticks: with the pid, it names a process across pid reuse."""
    fields = stat_fields(pid, proc)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def is_kernel_thread(pid: int, proc: str = PROC) -> bool:
    fields = stat_fields(pid, proc)
    try:
        return bool(fields and int(fields[6]) & PF_KTHREAD)
    except (IndexError, ValueError):
        return False


def comm_of(pid: int, proc: str = PROC) -> Optional[str]:
    text = read_text(f"{proc}/{pid}/comm")
    return text.strip() if text is not None else None


def exe_of(pid: int, proc: str = PROC) -> Optional[str]:
    try:
        return os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None


def threads_of(pid: int, proc: str = PROC) -> Dict[int, str]:
    out: Dict[int, str] = {}
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for name in tids:
        if name.isdigit():
            comm = read_text(f"{proc}/{pid}/task/{name}/comm")
            if comm is not None:
                out[int(name)] = comm.strip()
    return out


def cgroup_place(cg: CgroupInfo) -> ProcessPlace:
    """The cgroup part of a place: path, container id, runtime, pod UID (each if known)."""
    out: ProcessPlace = {}
    if cg.path:
        out["cgroup"] = cg.path
    if cg.container_id:
        out["container_id"] = cg.container_id
    if cg.runtime:
        out["runtime"] = cg.runtime
    if cg.pod_uid:
        out["pod_uid"] = cg.pod_uid
    return out


def place_of(pid: int, proc: str = PROC, kernel_thread: bool = False) -> ProcessPlace:
    """Where a process runs: its container and pod (from its cgroups) and its executable
    (a kernel thread has none); what is unknown is left out."""
    cg = read_cgroup(pid, proc)
    out = cgroup_place(cg) if cg is not None else {}
    if not kernel_thread:
        exe = exe_of(pid, proc)
        if exe:
            out["exe"] = exe
    return out


def describe(pid: int, fallback_comm: str = "", with_threads: bool = False,
             proc: str = PROC) -> ProcessRecord:
    """The ``process`` wire record of ``pid``, as /proc shows it now."""
    comm = comm_of(pid, proc)
    kthread = is_kernel_thread(pid, proc) if pid != 0 else True
    rec: ProcessRecord = {"type": "process", "pid": pid,
                          "comm": comm if comm is not None else fallback_comm,
                          "kernel_thread": kthread}
    if comm is None:
        rec["gone"] = True
    if pid == 0:
        rec["comm"] = fallback_comm or "swapper"
        return rec
    rec.update(place_of(pid, proc, kthread))
    if with_threads:
        threads = threads_of(pid, proc)
        if threads:
            rec["threads"] = {str(t): c for t, c in sorted(threads.items())}
    return rec


class Identities:
    """Emits one ``process`` record per pid, the first time it is seen."""

    def __init__(self, cgroups: Optional[CgroupPaths] = None) -> None:
        self.cgroups = cgroups if cgroups is not None else CgroupPaths()
        self._seen: Dict[int, ProcessRecord] = {}
        self._cgroup_ids: Dict[int, int] = {}  # pid -> the cgroup BPF last saw it wake in
        self._tgid: Dict[int, int] = {}
        self._thread_owner: Dict[int, int] = {}

    def tgid(self, tid: int) -> int:
        """Tgid of a thread id (the preemptor's ``next_pid`` is a thread id): from /proc, else
        from the thread lists of processes seen earlier, else the tid itself."""
        if tid not in self._tgid:
            self._tgid[tid] = tgid_of(tid) or self._thread_owner.get(tid) or tid
        return self._tgid[tid]

    def _remember_threads(self, rec: ProcessRecord) -> None:
        for t in rec.get("threads") or {}:
            self._thread_owner[int(t)] = rec["pid"]

    def note_cgroup(self, pid: int, cgroup_id: int) -> None:
        """The cgroup BPF saw ``pid`` in when it woke a target: what places a process that
        exits before /proc can say. Noted for a whole snapshot before any of its records
        is written, since the same short-lived process may come first as a preemptor or as
        the holder of a CPU, which BPF takes no cgroup of."""
        if cgroup_id > 0:
            self._cgroup_ids[pid] = cgroup_id

    def _place_by_cgroup_id(self, rec: ProcessRecord) -> bool:
        """Adds the cgroup BPF saw to a record /proc could not place; whether it did."""
        if "cgroup" in rec or rec["pid"] == 0:
            return False
        path = self.cgroups.path(self._cgroup_ids.get(rec["pid"], 0))
        if path is None:
            return False
        rec.update(cgroup_place(parse_cgroup_path(path)))
        return True

    def new_record(self, pid: int, fallback_comm: str = "",
                   with_threads: bool = False) -> Optional[ProcessRecord]:
        """The record of a pid not seen before; or, once more, that of a process that
        exited unplaced and that a cgroup id noted since places; else None."""
        old = self._seen.get(pid)
        if old is not None:
            return old if self._place_by_cgroup_id(old) else None
        rec = describe(pid, fallback_comm, with_threads)
        self._place_by_cgroup_id(rec)
        self._seen[pid] = rec
        self._remember_threads(rec)
        return rec

    def refresh(self, pid: int, fallback_comm: str = "") -> ProcessRecord:
        """A fresh record that keeps the threads seen before: thread names change, and
        threads that did their work and exited still need a name."""
        rec = describe(pid, fallback_comm, with_threads=True)
        old = self._seen.get(pid)
        if rec.get("gone") and old is not None:
            return old
        if old is not None and old.get("threads"):
            threads = dict(old["threads"])
            threads.update(rec.get("threads") or {})
            rec["threads"] = dict(sorted(threads.items(), key=lambda kv: int(kv[0])))
        self._seen[pid] = rec
        self._remember_threads(rec)
        return rec

    def seen(self, pid: int) -> Optional[ProcessRecord]:
        return self._seen.get(pid)
