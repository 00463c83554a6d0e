"""A CPU limit on Envoy, as Kubernetes sets one on a container: a CFS quota on its cgroup.

cgroup v2 writes ``cpu.max`` ("QUOTA PERIOD"); cgroup v1 writes ``cpu.cfs_period_us`` and
``cpu.cfs_quota_us`` of the ``cpu`` hierarchy. Which one works depends on where the host
mounted the ``cpu`` controller: on a hybrid host it is usually bound to v1
(``/sys/fs/cgroup/cpu``) and the v2 tree at ``/sys/fs/cgroup/unified`` has no ``cpu``
controller at all, so v2 is used only when its root lists ``cpu`` in
``cgroup.controllers``. Either way the group is ``offwake-demo-<pid>-envoy`` at the root of
that hierarchy, and the collector reads its ``cpu.stat`` (``nr_throttled``) as it reads a
pod's.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import RunFailed
from .cgroup import find_v2_root

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class CpuController:
    """Where the ``cpu`` controller is: the hierarchy's mount point and its version."""

    root: str
    version: int  # 1 or 2


def _v1_cpu_mounts(mountinfo: str = MOUNTINFO) -> List[str]:
    out = []
    try:
        with open(mountinfo) as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] == "cgroup" \
                        and "cpu" in rfields[2].split(","):
                    out.append(fields[4])
    except OSError:
        pass
    return out


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def find_cpu_controller(v2_root: Optional[str] = None,
                        mountinfo: str = MOUNTINFO) -> Optional[CpuController]:
    """The v2 tree if it offers ``cpu``, else the v1 ``cpu`` hierarchy, else ``None``."""
    root = v2_root if v2_root is not None else find_v2_root()
    if root is not None and "cpu" in _read(os.path.join(root, "cgroup.controllers")).split():
        return CpuController(root, 2)
    mounts = _v1_cpu_mounts(mountinfo)
    return CpuController(mounts[0], 1) if mounts else None


def group_name(prefix: str) -> str:
    """The limit group of the demo named ``prefix`` (``offwake-demo-<pid>``)."""
    return f"{prefix}-envoy"


class CpuLimitGroup:
    """One cgroup with a CFS quota: created, joined by Envoy, read, removed."""

    def __init__(self, prefix: str, controller: Optional[CpuController] = None) -> None:
        self.controller = controller or find_cpu_controller()
        self.path: Optional[str] = None
        if self.controller is not None:
            self.path = os.path.join(self.controller.root, group_name(prefix))

    def create(self, quota_us: int, period_us: int) -> str:
        """Make the group with its quota; returns the file the quota was written to."""
        if self.controller is None or self.path is None:
            raise RunFailed("this host has no cgroup cpu controller (neither cgroup v2 with "
                            "cpu nor a v1 cpu hierarchy), so the demo cannot set a CPU limit")
        if self.controller.version == 2:
            self._enable_v2_cpu()
        try:
            os.mkdir(self.path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RunFailed(f"cannot create the cgroup {self.path} ({exc.strerror}); the "
                            "demo needs root") from None
        for name, value in self._quota_files(quota_us, period_us):
            self._write(name, value)
        return os.path.join(self.path, self._quota_files(quota_us, period_us)[-1][0])

    def _quota_files(self, quota_us: int, period_us: int) -> List[Tuple[str, str]]:
        assert self.controller is not None
        if self.controller.version == 2:
            return [("cpu.max", f"{quota_us} {period_us}")]
        # the period first: a quota is checked against the period in force
        return [("cpu.cfs_period_us", str(period_us)), ("cpu.cfs_quota_us", str(quota_us))]

    def _enable_v2_cpu(self) -> None:
        """Offer ``cpu`` to the root's children (systemd hosts have it on already)."""
        assert self.controller is not None
        control = os.path.join(self.controller.root, "cgroup.subtree_control")
        if "cpu" not in _read(control).split():
            with open(control, "w") as handle:
                handle.write("+cpu\n")

    def _write(self, name: str, value: str) -> None:
        assert self.path is not None
        try:
            with open(os.path.join(self.path, name), "w") as handle:
                handle.write(value + "\n")
        except OSError as exc:
            raise RunFailed(f"cannot write {value!r} to {os.path.join(self.path, name)} "
                            f"({exc.strerror})") from None

    def add(self, pid: int) -> None:
        """Move a whole process (every thread) into the group."""
        self._write("cgroup.procs", str(pid))

    def stat(self) -> dict:
        """``cpu.stat`` as numbers (``nr_periods``, ``nr_throttled``, ...)."""
        out = {}
        if self.path is not None:
            for line in _read(os.path.join(self.path, "cpu.stat")).splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    out[parts[0]] = int(parts[1])
        return out

    def pids(self) -> List[int]:
        if self.path is None:
            return []
        text = _read(os.path.join(self.path, "cgroup.procs"))
        return [int(line) for line in text.split() if line.isdigit()]

    def remove(self, timeout: float = 3.0) -> Optional[str]:
        """Kill what is still inside (on v2 Envoy left the demo's own group for this one),
        then remove the group; returns a problem, if any."""
        if self.path is None or not os.path.isdir(self.path):
            return None
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.rmdir(self.path)
                return None
            except OSError as exc:
                if time.monotonic() > deadline:
                    return f"cgroup {self.path}: {exc.strerror}"
                time.sleep(0.05)
