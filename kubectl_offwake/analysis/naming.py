"""Display names of the parties in a report (docs/design.md §3.3, §5).

A waker is named by its *process* (tgid), so the threads of one program group together:
``ns/pod/container`` for a pod's process, the label a naming step gave it,
``kernel: COMM`` for a kernel thread, ``host: COMM`` for a known process of no pod, and
the bare thread comm when the source says nothing more (imports). Some comms are kernel
threads whatever the source: ``swapper/N`` (the idle task), ``ksoftirqd/N``,
``kworker/…``, ``migration/N``, ``rcu_*``, ``idle_inject/N`` — those are ``kernel: COMM``.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from .model import ProcessInfo, Recording, Task
from .report import Party
from .roles import Roles

_KERNEL_COMM = re.compile(
    r"^(swapper(/\d+)?|ksoftirqd/\d+|kworker/.*|migration/\d+|rcu_.*|idle_inject/\d+"
    r"|cpuhp/\d+|watchdog/\d+|kthreadd|irq/\d+-.*|kcompactd\d+|kswapd\d+)$"
)

KERNEL_PREFIX = "kernel: "
HOST_PREFIX = "host: "


def is_kernel_comm(comm: str) -> bool:
    """A comm that is certainly a kernel thread's, whatever else the source says."""
    return bool(_KERNEL_COMM.match(comm))


def is_kernel_name(name: str) -> bool:
    """A display name this module gave a kernel thread (``kernel: ksoftirqd/1``)."""
    return name.startswith(KERNEL_PREFIX)


def process_name(info: ProcessInfo, comm: str, process_comm: Optional[str] = None) -> str:
    """The display name of a known process (``comm`` is the thread's, for kernel threads;
    ``process_comm`` the process's when known better than its record's, see
    :func:`current_process_comm`)."""
    if info.pod and info.container:
        return f"{info.pod}/{info.container}"
    if info.label:
        return info.label
    if info.pod:
        return info.pod
    if info.kernel_thread or is_kernel_comm(comm):
        return KERNEL_PREFIX + comm
    return HOST_PREFIX + (process_comm or info.comm or comm)


def current_process_comm(info: ProcessInfo, task: Task) -> Optional[str]:
    """The process's comm as it was at this task's event: the main thread's comm (``tid ==
    pid``) is the process's own at that moment, newer than the record's, which was read
    once (a shell that forked, read as ``sh``, then became ``curl``); other threads keep
    the record's (Envoy's workers are ``wrk:worker_0`` in a process named ``envoy``)."""
    if task.tid is not None and task.tid == task.pid and task.comm:
        return task.comm
    return info.comm or None


def bare_name(comm: str) -> str:
    """The display name of a task the source says nothing more about."""
    if is_kernel_comm(comm):
        return KERNEL_PREFIX + comm
    return comm or "?"


class Namer:
    """Turns tasks into :class:`Party` objects, memoised per (comm, pid, tid)."""

    def __init__(self, recording: Recording, roles: Optional[Roles] = None) -> None:
        self._recording = recording
        self._roles = roles if roles is not None else Roles(recording)
        self._by_tid: Dict[int, ProcessInfo] = {}
        for info in recording.processes.values():
            for tid in info.threads:
                self._by_tid.setdefault(int(tid), info)
        self._memo: Dict[Tuple[str, Optional[int], Optional[int]], Party] = {}

    def process(self, task: Task) -> Optional[ProcessInfo]:
        """The process record of a task: by tgid, else by thread id."""
        if task.pid is not None:
            found = self._recording.processes.get(task.pid)
            if found is not None:
                return found
        tid = task.tid if task.tid is not None else task.pid
        if tid is not None:
            return self._by_tid.get(tid)
        return None

    def party(self, task: Task) -> Party:
        key = (task.comm, task.pid, task.tid)
        found = self._memo.get(key)
        if found is None:
            found = self._make(task)
            self._memo[key] = found
        return found

    def _make(self, task: Task) -> Party:
        info = self.process(task)
        role = self._roles.role(task)
        if info is None:
            return Party(comm=task.comm, pid=task.pid, tid=task.tid, name=bare_name(task.comm),
                         role=role)
        pid = task.pid if task.pid is not None else info.pid
        process_comm = current_process_comm(info, task)
        return Party(comm=task.comm, pid=pid, tid=task.tid,
                     name=process_name(info, task.comm, process_comm),
                     pod=info.pod, container=info.container, role=role,
                     process_comm=process_comm)
