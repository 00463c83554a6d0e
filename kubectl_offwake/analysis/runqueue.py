"""Who held the CPU while the traced threads waited in the run queue. The collector names, for
every wait in the run queue (after a wake, or a whole preemption), the task that ran on that
CPU just before the waiting thread got it back (its ``queued`` records,
``Recording.queued``). Summed here per traced process and holder: another process by its
display name, as the wakers are (``vocabulary.process_label``: a neighbour's pod, container
and comm; two hundred short-lived ``curl`` processes of one container are one holder), one
of the traced process's own threads by thread, ``COMM (TID)`` as the target threads are
named (the workers queueing behind each other or behind the main thread), or the idle CPU
(the wait was the wakeup's own latency). The noisy-neighbour finding rests on these sums,
and every view lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .model import Recording
from .naming import Namer, is_kernel_name
from .report import Party
from .roles import WORKER
from .vocabulary import IDLE_CPU, process_label, thread_name


@dataclass
class Holder:
    """The run-queue waits of one traced process's threads behind one holder of the CPU."""

    #: The traced process whose threads waited (pid, and its display name).
    pid: Optional[int]
    process: str
    #: Who held the CPU: a process (a thread of it, for the traced process's own threads;
    #: the first one seen, when several processes share the display name), or None for an
    #: idle CPU.
    holder: Optional[Party]
    label: str
    #: The holder is a thread of the traced process itself.
    own: bool
    #: The holder is a kernel thread (``kernel: ksoftirqd/1``): the node's own work.
    kernel: bool = False
    count: int = 0
    wait_us: int = 0
    max_us: int = 0
    #: Of ``wait_us``, the waits of worker threads.
    workers_wait_us: int = 0
    #: The run-queue waits of the process's threads behind every holder: what
    #: :attr:`share` is a part of.
    process_wait_us: int = 0

    @property
    def share(self) -> float:
        """This holder's part of its process's run-queue wait (every view shows it)."""
        return self.wait_us / self.process_wait_us if self.process_wait_us else 0.0


def holders(recording: Recording, namer: Namer) -> List[Holder]:
    """Per traced process, its threads' run-queue waits by holder, longest first."""
    groups: Dict[Tuple[Optional[int], str, object], Holder] = {}
    for q in recording.queued:
        target = namer.party(q.task)
        holder = namer.party(q.holder) if q.holder is not None else None
        own = holder is not None and holder.pid is not None and holder.pid == target.pid
        # a thread of the traced process by thread, as the target threads are named; another
        # process by its display name, as the wakers
        if holder is None:
            who: object = None
            label = IDLE_CPU
        elif own:
            who, label = ("thread", holder.tid), thread_name(holder)
        else:
            label = process_label(holder)
            who = ("process", label)
        key = (target.pid, target.name, who)
        group = groups.get(key)
        if group is None:
            kernel = holder is not None and is_kernel_name(holder.name)
            group = groups[key] = Holder(target.pid, target.name, holder, label, own, kernel)
        group.count += q.count
        group.wait_us += q.wait_us
        group.max_us = max(group.max_us, q.max_us)
        if target.role == WORKER:
            group.workers_wait_us += q.wait_us
    found = list(groups.values())
    totals: Dict[str, int] = {}
    for h in found:
        totals[h.process] = totals.get(h.process, 0) + h.wait_us
    for h in found:
        h.process_wait_us = totals[h.process]
    return sorted(found, key=lambda h: (str(h.pid), -h.wait_us, h.label))

