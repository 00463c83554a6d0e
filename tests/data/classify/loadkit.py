"""What every test load here needs: threads that name themselves, and one deadline.

The loads (``wake_load.py``, ``categories_load.py``) are scripts run as they are, so this
sits beside them and is imported by file name. Thread names are what the recordings and
the tests look for; the deadline lets the collector trace a load that ends on its own.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Callable

LIBC = ctypes.CDLL(None)
PR_SET_NAME = 15


def name(comm: str) -> None:
    """Name the calling thread (its comm, at most 15 bytes)."""
    LIBC.prctl(PR_SET_NAME, comm.encode(), 0, 0, 0)


def until(seconds_variable: str, default_s: float = 8.0) -> Callable[[], bool]:
    """True until the deadline: ``$seconds_variable`` seconds from now (``default_s``)."""
    stop = time.time() + float(os.environ.get(seconds_variable, default_s))
    return lambda: time.time() < stop
