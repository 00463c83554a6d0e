"""Process-level helpers for every child this package starts (the local collector, the
demo's stand-ins): the one place ``prctl`` is resolved.

A stand-in names itself (``/proc/self/comm``) so the report shows ``pilot-agent`` or
``kubelet`` as the waker instead of ``python3``, and asks the kernel to kill it when its
parent dies, so a crashed demo leaves no orphan behind.

:func:`die_with_parent` also runs as ``preexec_fn``, between fork and exec, while other
threads of the parent (rich's refresh thread, readers) may hold locks. So ``prctl`` is
looked up here, once, when the parent imports this module: the child only calls it.
``ctypes.util.find_library`` would run ``ldconfig`` in a subprocess; ``CDLL(None)`` opens
the symbols already loaded into this process (libc among them) and runs nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any, Iterable, Optional

_PR_SET_PDEATHSIG = 1


def _resolve_prctl() -> Optional[Any]:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


#: libc's ``prctl``, resolved in the parent at import (``None`` where there is no libc).
_PRCTL = _resolve_prctl()


def set_comm(name: str) -> None:
    """Rename the calling thread (the main thread's name is the process's comm)."""
    try:
        with open("/proc/self/comm", "w") as handle:
            handle.write(name[:15])
    except OSError:
        pass


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` when the parent exits (``PR_SET_PDEATHSIG``).

    Safe as ``preexec_fn``: it makes one system call and starts nothing.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def pin(cpus: Optional[Iterable[int]]) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, set(cpus))
