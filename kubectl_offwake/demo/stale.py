"""Removes what a killed demo left behind (SIGKILL, a crash, a power cut of the terminal).

A demo names everything after its PID (``offwake-demo-<pid>``): the network namespace, the
veth pair, the cgroup, Envoy's CPU-limit cgroup (``offwake-demo-<pid>-envoy``, in the
hierarchy that has the ``cpu`` controller) and the temporary directory. When that PID no
longer runs a demo, nothing owns them any more, and the next demo removes them before it
starts. A PID that is alive is left alone, whatever it runs now: better a leftover than
someone else's namespace removed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from typing import List, Set

from .cgroup import DemoCgroup, find_v2_root
from .cpulimit import CpuLimitGroup, find_cpu_controller
from .network import run_ip

PREFIX = "offwake-demo-"
_NAME = re.compile(r"^offwake-demo-(\d+)(?:-.*)?$")


def _owner_pids() -> Set[int]:
    pids: Set[int] = set()
    for line in run_ip("netns", "list", check=False).stdout.splitlines():
        match = _NAME.match(line.split()[0]) if line.strip() else None
        if match:
            pids.add(int(match.group(1)))
    cpu = find_cpu_controller()
    for root in {find_v2_root(), cpu.root if cpu else None}:
        for path in glob.glob(os.path.join(root, PREFIX + "*")) if root else []:
            match = _NAME.match(os.path.basename(path))
            if match:
                pids.add(int(match.group(1)))
    for path in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*")):
        match = _NAME.match(os.path.basename(path))
        if match:
            pids.add(int(match.group(1)))
    return pids


def _running(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def remove_stale(current_pid: int) -> List[int]:
    """Remove leftovers of demos whose process is gone; returns their PIDs."""
    removed = []
    for pid in sorted(_owner_pids()):
        if pid == current_pid or _running(pid):
            continue
        name = f"{PREFIX}{pid}"
        group = DemoCgroup(name)
        if group.path is not None and os.path.isdir(group.path):
            group.created = True
            try:
                group.kill_and_remove()
            except OSError:
                pass
        CpuLimitGroup(name).remove()
        run_ip("link", "del", f"owd{pid % 10**8}h", check=False)
        run_ip("netns", "del", name, check=False)
        for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{name}-*")):
            shutil.rmtree(path, ignore_errors=True)
        removed.append(pid)
    return removed
