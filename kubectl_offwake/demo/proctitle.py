"""Small process-level helpers for the demo's stand-in processes.

A stand-in names itself (``/proc/self/comm``) so the report shows ``pilot-agent`` or
``kubelet`` as the waker instead of ``python3``, and asks the kernel to kill it when its
parent dies, so a crashed demo leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from typing import Iterable, Optional

_PR_SET_PDEATHSIG = 1


def set_comm(name: str) -> None:
    """Rename the calling thread (the main thread's name is the process's comm)."""
    try:
        with open("/proc/self/comm", "w") as handle:
            handle.write(name[:15])
    except OSError:
        pass


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` when the parent exits (``PR_SET_PDEATHSIG``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except OSError:
        pass


def pin(cpus: Optional[Iterable[int]]) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, set(cpus))
