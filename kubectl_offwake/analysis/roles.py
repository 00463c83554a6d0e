"""Envoy thread roles (docs/design.md §3.4), from thread names.

Envoy names its threads: ``envoy`` (main), ``wrk:worker_N``, ``dog:main``/``dog:workers``
(watchdogs), ``AccessLogFlush``, ``grpc_global_tim`` (gRPC's timer). A role is only
given to threads of an Envoy process, so a ``dog:*`` thread of some other program is not
called a watchdog. A process is taken to be Envoy when

* the collector's process record says so: its comm is ``envoy`` or its executable's
  name starts with ``envoy``, or one of its threads is named ``wrk:worker_N``; or
* a thread of that tgid seen anywhere in the recording is named ``envoy`` or
  ``wrk:worker_N`` (imports carry no process records); or
* for tasks the source gives no tgid (BCC folded output names only comms), the
  recording contains a tgid-less thread named ``envoy`` or ``wrk:worker_N``; then only
  tgid-less threads whose names are Envoy's own get a role (never ``other``: nothing
  ties an unknown name to that Envoy).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterable, Optional, Set

from .categories import ROLES
from .model import Recording, Task

MAIN, WORKER, WATCHDOG, ACCESS_LOG_FLUSH, GRPC_TIMER, OTHER = ROLES

_WORKER = re.compile(r"^wrk:worker_\d+$")
_SIGNATURE = re.compile(r"^(envoy|wrk:worker_\d+)$")


def role_of_comm(comm: str) -> str:
    """The role a thread of an Envoy process has, by its name."""
    if comm == "envoy":
        return MAIN
    if _WORKER.match(comm):
        return WORKER
    if comm.startswith("dog:"):
        return WATCHDOG
    if comm == "AccessLogFlush":
        return ACCESS_LOG_FLUSH
    if comm.startswith("grpc_global_tim"):
        return GRPC_TIMER
    return OTHER


def is_envoy_signature(comm: Optional[str]) -> bool:
    """A thread name only Envoy uses for its own threads."""
    return bool(comm) and bool(_SIGNATURE.match(comm or ""))


class Roles:
    """Decides once per recording which processes are Envoy, then names thread roles."""

    def __init__(self, recording: Recording) -> None:
        self.envoy_pids: Set[int] = set()
        self.pidless_envoy = False
        for info in recording.processes.values():
            exe = os.path.basename(info.exe or "")
            if (info.comm == "envoy" or exe.startswith("envoy")
                    or any(_WORKER.match(c) for c in info.threads.values())):
                self.envoy_pids.add(info.pid)
        for task in _distinct_tasks(recording):
            if is_envoy_signature(task.comm):
                if task.pid is None:
                    self.pidless_envoy = True
                else:
                    self.envoy_pids.add(task.pid)

    def role(self, task: Optional[Task]) -> Optional[str]:
        """The Envoy role of a thread, or None when it is not an Envoy thread."""
        if task is None:
            return None
        if task.pid is None:
            if not self.pidless_envoy:
                return None
            found = role_of_comm(task.comm)
            return None if found == OTHER else found
        if task.pid in self.envoy_pids:
            return role_of_comm(task.comm)
        return None


def _distinct_tasks(recording: Recording) -> Iterable[Task]:
    """Every task the recording names, once per object (importers intern tasks)."""
    seen: Dict[int, Task] = {}
    for edge in recording.edges:
        seen[id(edge.target)] = edge.target
        if edge.waker is not None:
            seen[id(edge.waker)] = edge.waker
        if edge.preempted_by is not None:
            seen[id(edge.preempted_by)] = edge.preempted_by
    for run in recording.oncpu:
        seen[id(run.task)] = run.task
    for pending in recording.pending:
        seen[id(pending.task)] = pending.task
    return list(seen.values())
