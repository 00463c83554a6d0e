"""Resolves what to trace into host tgids: by pid, by comm, or by container id.

A container's processes are found by scanning ``/proc/*/cgroup`` for the id as the runtimes
name it (see cgroups.py). Inside an Istio sidecar container the container's PID 1 is
pilot-agent, which starts Envoy as its child, so we pick Envoy by comm or executable name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..wire.schema import ProcessPlace, TargetBy, TargetProcess
from .cgroups import matches_container, read_cgroup
from .identity import comm_of, exe_of, place_of, start_time, stat_fields

ENVOY_NAMES = ("envoy",)


@dataclass
class Target:
    pid: int
    comm: str
    by: TargetBy
    place: ProcessPlace = field(default_factory=ProcessPlace)
    start_time: Optional[int] = None

    def record(self) -> TargetProcess:
        """This target as one entry of the ``target`` record."""
        out: TargetProcess = {"pid": self.pid, "comm": self.comm, "by": self.by}
        out.update(self.place)
        return out

    def alive(self, proc: str = "/proc") -> bool:
        """Still the same, living process (a recycled pid has another start time; a zombie
        whose parent has not reaped it yet has exited all the same)."""
        fields = stat_fields(self.pid, proc)
        if not fields or fields[0] in ("Z", "X"):
            return False
        now = start_time(self.pid, proc)
        return now is not None and (self.start_time is None or now == self.start_time)


@dataclass
class Resolution:
    targets: List[Target] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _pids(proc: str) -> List[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc) if n.isdigit())
    except OSError:
        return []


def _make(pid: int, by: TargetBy, proc: str) -> Optional[Target]:
    comm = comm_of(pid, proc)
    if comm is None:
        return None
    return Target(pid=pid, comm=comm, by=by, place=place_of(pid, proc),
                  start_time=start_time(pid, proc))


def _is_named(pid: int, names: Sequence[str], proc: str) -> bool:
    comm = comm_of(pid, proc) or ""
    exe = os.path.basename(exe_of(pid, proc) or "")
    if exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    return comm in names or exe in names


def resolve(pids: Sequence[int] = (), comm: Optional[str] = None,
            container_ids: Sequence[str] = (), proc: str = "/proc") -> Resolution:
    """All targets named by the arguments; notes say what was not found and why."""
    res = Resolution()
    seen = set()
    me = os.getpid()

    def add(t: Optional[Target]) -> None:
        if t is not None and t.pid not in seen:
            seen.add(t.pid)
            res.targets.append(t)

    for pid in pids:
        t = _make(pid, "pid", proc)
        if t is None:
            res.notes.append(f"pid {pid} does not exist")
        add(t)

    all_pids = _pids(proc) if (comm or container_ids) else []
    if comm and not container_ids:
        found = [p for p in all_pids if p != me and _is_named(p, (comm,), proc)]
        if not found:
            res.notes.append(f"no process named {comm!r}")
        for p in found:
            add(_make(p, "comm", proc))

    for cid in container_ids:
        members = []
        for p in all_pids:
            cg = read_cgroup(p, proc)
            if cg is not None and matches_container(cg, cid):
                members.append(p)
        if not members:
            res.notes.append(f"no process in container {cid[:12]}")
            continue
        names = (comm,) if comm else ENVOY_NAMES
        chosen = [p for p in members if _is_named(p, names, proc)]
        if not chosen:
            if comm:
                res.notes.append(f"no process named {comm!r} in container {cid[:12]}")
                continue
            # No Envoy: trace the whole container (a plain workload, or a test).
            res.notes.append(
                f"no envoy in container {cid[:12]}; tracing its {len(members)} process(es)")
            chosen = members
        for p in chosen:
            add(_make(p, "container-id", proc))
    return res
