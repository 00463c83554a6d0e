"""Starts the demo's processes and stops every one of them by PID.

Each process can be placed in the demo's network namespace (``ip netns exec`` keeps the
PID: it execs the command) and joins the demo's cgroup before it execs, so nothing it
forks escapes teardown either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Set

from ..errors import RunFailed
from ..prctl import die_with_parent
from .cgroup import DemoCgroup


@dataclass
class Started:
    name: str
    popen: subprocess.Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.popen.pid


def package_root() -> str:
    """The directory that holds the ``kubectl_offwake`` package (for ``PYTHONPATH``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Supervisor:
    def __init__(self, workdir: str, cgroup: Optional[DemoCgroup] = None) -> None:
        self.workdir = workdir
        self.cgroup = cgroup
        self.started: Dict[str, Started] = {}

    def python_module(self, module: str, *args: str) -> List[str]:
        """Command line running one of the demo's stand-in modules under this interpreter."""
        return [sys.executable, "-m", f"kubectl_offwake.demo.{module}", *args]

    def start(self, name: str, argv: List[str], netns_prefix: Optional[List[str]] = None,
              cpus: Optional[Set[int]] = None) -> Started:
        env = dict(os.environ)
        root = package_root()
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH", "")) if p
        )
        env.pop("PYTHONSTARTUP", None)
        cgroup = self.cgroup

        def child_setup() -> None:
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the demo only; it stops these
            die_with_parent(signal.SIGKILL)  # and if the demo itself is killed, so are they
            if cgroup is not None:
                cgroup.join_self()
            if cpus:
                os.sched_setaffinity(0, cpus)

        log_path = os.path.join(self.workdir, f"{name}.log")
        # Ctrl-C (or SIGTERM) waits until the process is on the books, so teardown knows
        # every PID: an interrupt inside Popen would leave a child nobody stops or reaps.
        with deferred_signals():
            with open(log_path, "ab") as log:
                try:
                    popen = subprocess.Popen(
                        [*(netns_prefix or []), *argv], stdin=subprocess.DEVNULL, stdout=log,
                        stderr=log, env=env, cwd=self.workdir, preexec_fn=child_setup,
                        close_fds=True,
                    )
                except OSError as exc:
                    raise RunFailed(
                        f"cannot start {name} ({argv[0]}): {exc.strerror}"
                    ) from None
            started = Started(name, popen, log_path)
            self.started[name] = started
        return started

    def alive(self, name: str) -> bool:
        started = self.started.get(name)
        return started is not None and started.popen.poll() is None

    def log_tail(self, name: str, lines: int = 5) -> str:
        started = self.started.get(name)
        if started is None:
            return ""
        try:
            with open(started.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def stop(self, name: str, timeout: float = 3.0) -> None:
        started = self.started.pop(name, None)
        if started is None:
            return
        popen = started.popen
        if popen.poll() is None:
            try:
                os.kill(popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                popen.wait()

    def stop_all(self) -> None:
        """Stop in reverse start order: load first, the services it needs last."""
        for name in reversed(list(self.started)):
            self.stop(name)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver them as usual.

    Python runs signal handlers in the main thread between bytecodes, so swapping the
    handlers (not the thread's signal mask, which other threads would bypass) is what
    keeps a ``KeyboardInterrupt`` out of the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: List[int] = []

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if held:
            first = signal.Signals(held[0])
            previous = old[first]
            if callable(previous):
                previous(first, None)
            elif previous == signal.SIG_DFL:
                if first == signal.SIGINT:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), first)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
