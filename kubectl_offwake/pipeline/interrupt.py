"""The one interruption rule of every run: Ctrl-C once stops gracefully, twice forces.

A graceful stop asks each collector to take its final snapshot and end its stream (SIGTERM
to a local subprocess, a pod delete with a grace period on a node), so what it aggregated
since its last snapshot still arrives. A second Ctrl-C stops waiting for that. SIGTERM and
SIGHUP count as Ctrl-C: a wrapper script or a closed terminal stops a run the same way.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Dict, Optional

#: What the run says on the first and the second interruption.
GRACEFUL = "stopping: the collectors flush what they have (Ctrl-C again to force)"
FORCED = "forcing the collectors to stop"

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interruptions:
    """While entered, the signals above call ``stop(force)``: False first, True after.

    ``stop`` runs in the signal handler on the main thread, so it must only ask (send a
    signal, start a thread), never wait. Outside the main thread signals cannot be caught
    and the context changes nothing.
    """

    def __init__(self, stop: Callable[[bool], None],
                 say: Optional[Callable[[str], None]] = None) -> None:
        self._stop = stop
        self._say = say
        self.count = 0
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> Interruptions:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def interrupted(self) -> bool:
        return self.count > 0

    def _handle(self, signum: int, frame: object) -> None:
        self.interrupt()

    def interrupt(self) -> None:
        """One interruption, as a signal makes it (also what a deadline calls)."""
        self.count += 1
        force = self.count > 1
        if self._say is not None:
            self._say(FORCED if force else GRACEFUL)
        self._stop(force)
