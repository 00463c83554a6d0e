"""A cgroup (v2) holding every process the demo starts, so teardown can kill them all.

Process IDs alone miss grandchildren and anything that forked; ``cgroup.kill`` on a v2
group does not. On hybrid hosts the v2 hierarchy lives at ``/sys/fs/cgroup/unified``.
When no writable v2 hierarchy exists the demo falls back to stopping processes by PID.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional

_MOUNTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def find_v2_root() -> Optional[str]:
    """The mount point of the cgroup v2 hierarchy, or ``None``."""
    for path in _MOUNTS:
        if os.path.exists(os.path.join(path, "cgroup.procs")) and os.path.exists(
            os.path.join(path, "cgroup.controllers")
        ):
            return path
    return None


class DemoCgroup:
    """One directory in the v2 hierarchy; created, joined, killed and removed."""

    def __init__(self, name: str, root: Optional[str] = None) -> None:
        self.root = root if root is not None else find_v2_root()
        self.path: Optional[str] = os.path.join(self.root, name) if self.root else None
        self.created = False

    def create(self) -> bool:
        """Make the group; ``False`` (and stopping by PID only) when the host does not allow it."""
        if self.path is None:
            return False
        try:
            os.mkdir(self.path)
        except OSError:
            self.path = None
            return False
        self.created = True
        return True

    def join_self(self) -> None:
        """Move the calling process into the group (used between fork and exec)."""
        if self.path is not None:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as handle:
                handle.write("0\n")

    def pids(self) -> List[int]:
        if self.path is None:
            return []
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as handle:
                return [int(line) for line in handle if line.strip()]
        except OSError:
            return []

    def kill_and_remove(self, timeout: float = 3.0) -> None:
        """Kill whatever is inside (again, if something joined late), then remove the group."""
        if self.path is None or not self.created:
            return
        seen: List[int] = []
        deadline = time.monotonic() + timeout
        while True:
            inside = self.pids()
            if inside:
                seen.extend(inside)
                self._kill(inside)
            _reap(seen)  # our own killed children stay zombies and keep the group busy
            try:
                os.rmdir(self.path)
                self.created = False
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _kill(self, pids: List[int]) -> None:
        assert self.path is not None
        kill_file = os.path.join(self.path, "cgroup.kill")
        if os.path.exists(kill_file):
            try:
                with open(kill_file, "w") as handle:
                    handle.write("1\n")
                return
            except OSError:
                pass
        for pid in pids:  # kernels before 5.14
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _reap(pids: List[int]) -> None:
    """Collect the exit status of those of ``pids`` that are this process's children."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
