"""Who held the CPU while the traced threads waited in the run queue.

The collector names, for every wait in the run queue (after a wake, or a whole preemption),
the task that ran on that CPU just before the waiting thread got it back (its ``queued``
records, ``Recording.queued``). Summed here per traced process and holder: another process
by its display name (a neighbour), one of the traced process's own threads by thread (the
workers queueing behind each other or behind the main thread), or the idle CPU (the wait
was the wakeup's own latency). The noisy-neighbour finding rests on these sums, and every
view lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .model import Recording
from .naming import Namer
from .report import Party
from .roles import WORKER
from .vocabulary import IDLE_CPU, party_label


@dataclass
class Holder:
    """The run-queue waits of one traced process's threads behind one holder of the CPU."""

    #: The traced process whose threads waited (pid, and its display name).
    pid: Optional[int]
    process: str
    #: Who held the CPU: a process (a thread of it, for the traced process's own threads),
    #: or None for an idle CPU.
    holder: Optional[Party]
    label: str
    #: The holder is a thread of the traced process itself.
    own: bool
    count: int = 0
    wait_us: int = 0
    max_us: int = 0
    #: Of ``wait_us``, the waits of worker threads.
    workers_wait_us: int = 0


def holders(recording: Recording, namer: Namer) -> List[Holder]:
    """Per traced process, its threads' run-queue waits by holder, longest first."""
    groups: Dict[Tuple[Optional[int], str, str], Holder] = {}
    for q in recording.queued:
        target = namer.party(q.task)
        holder = namer.party(q.holder) if q.holder is not None else None
        own = holder is not None and holder.pid is not None and holder.pid == target.pid
        # another process by its name; one of the traced process's own threads by thread
        label = IDLE_CPU if holder is None else party_label(holder) if own else holder.name
        key = (target.pid, target.name, label)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Holder(target.pid, target.name, holder, label, own)
        group.count += q.count
        group.wait_us += q.wait_us
        group.max_us = max(group.max_us, q.max_us)
        if target.role == WORKER:
            group.workers_wait_us += q.wait_us
    return sorted(groups.values(), key=lambda h: (str(h.pid), -h.wait_us, h.label))
