"""Host-side plumbing of the lab's container runtime: network namespaces, cgroups, processes.

Everything created here is first written to a ledger (JSON lines in the state dir), so
`tests/lab/down` can remove it even if the lab daemon died: processes (checked by start time,
never a reused PID), netns, cgroup directories and mountpoints the lab had to create.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

CGROUP_V2 = Path("/sys/fs/cgroup/unified")
CGROUP_SYSTEMD = Path("/sys/fs/cgroup/systemd")


def proc_start_time(pid: int) -> Optional[str]:
    """Field 22 of /proc/PID/stat: identifies a process beyond its (reusable) PID.

    None if there is no such process, or only its zombie (it has ended).
    """
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


class Ledger:
    """Append-only record of host resources the lab made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def add(self, kind: str, **fields: object) -> None:
        rec = {"kind": kind, **fields}
        with self.lock, self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def add_pid(self, pid: int) -> None:
        self.add("pid", pid=pid, start=proc_start_time(pid))

    def entries(self) -> List[Dict[str, object]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


def run(cmd: List[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


# ------------------------------------------------------------------ netns


def netns_create(name: str, ip: Optional[str]) -> None:
    """A pod network namespace with loopback up and an eth0 carrying the pod IP."""
    netns_delete(name)
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    if ip:
        # a veth pair with both ends inside the pod netns: an eth0 that carries the pod IP
        # (the dummy driver is not available everywhere); it goes away with the netns
        run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "veth0"])
        run(["ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth0"])
        run(["ip", "-n", name, "link", "set", "veth0", "up"])
        run(["ip", "-n", name, "link", "set", "eth0", "up"])


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def netns_delete(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "delete", name], check=False)


def netns_list(prefix: str) -> List[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(prefix)]


# ------------------------------------------------------------------ cgroups


def cgroup_roots(with_systemd: bool) -> List[Path]:
    roots = [CGROUP_V2]
    if with_systemd and CGROUP_SYSTEMD.is_dir():
        roots.append(CGROUP_SYSTEMD)
    return roots


def cgroup_make(root: Path, rel: str) -> Path:
    """mkdir -p, retrying: another lab may remove a shared empty parent slice meanwhile."""
    path = root / rel
    for _ in range(20):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except FileNotFoundError:
            time.sleep(0.01)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cgroup_pids(path: Path) -> List[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def cgroup_kill(path: Path) -> None:
    """SIGKILL every process in a cgroup (cgroup.kill on v2, one by one elsewhere)."""
    kill_file = path / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
    for pid in cgroup_pids(path):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def cgroup_remove(root: Path, rel: str, keep_parents: Iterable[str] = ()) -> None:
    """rmdir the cgroup, then its parents up to root while they are empty."""
    path = root / rel
    for _ in range(50):
        if not path.exists():
            break
        cgroup_kill(path)
        try:
            path.rmdir()
            break
        except OSError:
            time.sleep(0.02)
    parent = path.parent
    keep = set(keep_parents)
    while parent != root and str(parent.relative_to(root)) not in keep:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


# ------------------------------------------------------------------ processes


def kill_if_same(pid: int, start: Optional[str], sig: int = signal.SIGKILL) -> bool:
    """Signal pid only if it is still the process the ledger recorded."""
    if start is None or proc_start_time(pid) != start:
        return False
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
        return True
    return False


def children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                out.extend(int(x) for x in (task / "children").read_text().split())
    except OSError:
        pass
    return out


def mounted_elsewhere(path: Path) -> bool:
    """True if path (or something under it) is a mountpoint in some mount namespace.

    A lab creates missing mountpoints on the shared filesystem; removing one while another
    pod (of this or another lab) still has a bind mount there would silently detach it.
    """
    target = str(path)
    seen = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ino = os.stat(proc / "ns" / "mnt").st_ino
            if ino in seen:
                continue
            seen.add(ino)
            lines = (proc / "mountinfo").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 4:
                mp = fields[4].replace("\\040", " ")
                if mp == target or mp.startswith(target + "/"):
                    return True
    return False


def remove_mountpoint(path: Path) -> bool:
    """rmdir/unlink a mountpoint the lab created, unless it is empty-not or still in use."""
    if not path.exists() or mounted_elsewhere(path):
        return False
    try:
        if path.is_dir():
            path.rmdir()
        elif path.is_file() and path.stat().st_size == 0:
            path.unlink()
        else:
            return False
    except OSError:
        return False
    return True


def _opt_str(v: object) -> Optional[str]:
    return None if v is None else str(v)


def sweep(ledger: Ledger, prefix: str, with_systemd: bool = True) -> List[str]:
    """Remove everything the ledger lists (idempotent). Returns what it had to remove."""
    removed: List[str] = []
    entries = ledger.entries()
    for e in entries:
        if e["kind"] == "pid" and kill_if_same(int(str(e["pid"])), _opt_str(e.get("start"))):
            removed.append(f"pid {e['pid']}")
    cgroups = sorted({str(e["path"]) for e in entries if e["kind"] == "cgroup"},
                     key=lambda p: -p.count("/"))
    for rel in cgroups:
        for root in cgroup_roots(with_systemd):
            if (root / rel).exists():
                cgroup_remove(root, rel)
                removed.append(f"cgroup {root / rel}")
    for e in entries:
        if e["kind"] == "netns" and netns_exists(str(e["name"])):
            netns_delete(str(e["name"]))
            removed.append(f"netns {e['name']}")
    for name in netns_list(f"{prefix}-pod-"):
        netns_delete(name)
        removed.append(f"netns {name}")
    dirs = sorted({str(e["path"]) for e in entries if e["kind"] == "mountpoint"},
                  key=lambda p: -p.count("/"))
    for d in dirs:
        if remove_mountpoint(Path(d)):
            removed.append(f"mountpoint {d}")
    return removed
