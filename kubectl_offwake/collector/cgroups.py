"""Reads a process's cgroups: which container and pod it belongs to, and its CPU throttling.

Container runtimes name a container's cgroup after its id, and the kubelet names the pod's
cgroup after the pod UID; the naming differs by runtime and by cgroup driver:

    systemd driver:  .../kubepods-burstable-pod<uid_underscored>.slice/cri-containerd-<id>.scope
                     .../crio-<id>.scope   .../docker-<id>.scope
    cgroupfs driver: /kubepods/burstable/pod<uid>/<id>

and under cgroup v1 every controller hierarchy repeats the path (``name=systemd``, ``pids``,
``cpu,cpuacct`` ...), under v2 there is one line ``0::/path``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

_ID = r"([0-9a-f]{64})"
_SCOPED = [
    (re.compile(r"cri-containerd-" + _ID + r"\.scope"), "containerd"),
    (re.compile(r"crio-" + _ID + r"\.scope"), "cri-o"),
    (re.compile(r"docker-" + _ID + r"\.scope"), "docker"),
    (re.compile(r"cri-dockerd-" + _ID + r"\.scope"), "docker"),
]
_BARE = re.compile(r"/" + _ID + r"(?:/|$)")
_POD = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)

#: Runtime prefixes a caller may put before an id: ``containerd://<id>`` as the API shows it.
_RUNTIME_PREFIX = re.compile(r"^[a-z0-9-]+://")


@dataclass
class CgroupInfo:
    """Container identity parsed from one process's cgroup paths."""

    path: Optional[str] = None  # the most telling path (v2, else name=systemd, else first)
    container_id: Optional[str] = None
    runtime: Optional[str] = None
    pod_uid: Optional[str] = None
    lines: Tuple[Tuple[str, str, str], ...] = ()  # (hierarchy id, controllers, path)


def normalize_container_id(raw: str) -> str:
    """``containerd://abc...`` or ``abc...`` -> ``abc...`` (lower case)."""
    return _RUNTIME_PREFIX.sub("", raw.strip()).lower()


def parse_cgroup_file(text: str) -> CgroupInfo:
    """Parse the text of ``/proc/PID/cgroup``."""
    lines: List[Tuple[str, str, str]] = []
    for raw in text.splitlines():
        parts = raw.split(":", 2)
        if len(parts) == 3:
            lines.append((parts[0], parts[1], parts[2]))
    info = CgroupInfo(lines=tuple(lines))
    # Order of preference: the v2 line, then name=systemd, then any other.
    ordered = sorted(lines, key=lambda ln: 0 if ln[0] == "0" and ln[1] == "" else
                     1 if ln[1] == "name=systemd" else 2)
    for _hid, _ctl, path in ordered:
        cid, runtime = container_of_path(path)
        if info.path is None and path not in ("", "/"):
            info.path = path
        if cid and info.container_id is None:
            info.container_id, info.runtime, info.path = cid, runtime, path
        pod = pod_uid_of_path(path)
        if pod and info.pod_uid is None:
            info.pod_uid = pod
    if info.path is None and ordered:
        info.path = ordered[0][2]
    return info


def parse_cgroup_path(path: str) -> CgroupInfo:
    """The identity a cgroup v2 path names (as :func:`parse_cgroup_file` reads its line)."""
    return parse_cgroup_file(f"0::{path}")


def container_of_path(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(container id, runtime) named by a cgroup path, or (None, None)."""
    for rx, runtime in _SCOPED:
        found = rx.findall(path)
        if found:
            return found[-1], runtime
    bare = _BARE.findall(path)
    if bare:
        return bare[-1], ("docker" if "/docker/" in path else None)
    return None, None


def pod_uid_of_path(path: str) -> Optional[str]:
    found = _POD.findall(path)
    if not found:
        return None
    return found[-1].replace("_", "-")


def read_cgroup(pid: int, proc: str = "/proc") -> Optional[CgroupInfo]:
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            return parse_cgroup_file(f.read())
    except OSError:
        return None


def matches_container(info: CgroupInfo, container_id: str) -> bool:
    """True when any of the process's cgroup paths names this container id (or a 12+ prefix)."""
    cid = normalize_container_id(container_id)
    if not cid:
        return False
    for _hid, _ctl, path in info.lines:
        found, _rt = container_of_path(path)
        if found and (found == cid or (len(cid) >= 12 and found.startswith(cid))):
            return True
    return False


# --- CPU throttling -------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """A mountinfo path field: the kernel writes space, tab, newline and backslash as
    octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts(proc: str = "/proc") -> List[Tuple[str, str, List[str], str]]:
    """(mount point, fs type, super options, mount root) of every mount we see, in mount
    order (a later mount on a point hides what was mounted on it or below it before)."""
    out = []
    try:
        with open(f"{proc}/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                rfields = right.split()
                if len(fields) < 5 or len(rfields) < 3:
                    continue
                out.append((_unescape(fields[4]), rfields[0], rfields[2].split(","),
                            _unescape(fields[3])))
    except OSError:
        pass
    return out


def cgroup_mounts(proc: str = "/proc") -> List[Tuple[str, str, List[str], str]]:
    """The cgroup (v1) and cgroup2 mounts of :func:`mounts`."""
    return [m for m in mounts(proc) if m[1] in ("cgroup", "cgroup2")]


def cpu_stat_path(pid: int, info: CgroupInfo, proc: str = "/proc") -> Optional[str]:
    """The cpu.stat of the cgroup that throttles this process, as this process can read it."""
    cg_mounts = cgroup_mounts(proc)
    candidates: List[str] = []
    for _hid, ctl, path in info.lines:
        controllers = ctl.split(",") if ctl else []
        for mnt, fstype, opts, root in cg_mounts:
            if (ctl == "" and fstype == "cgroup2") or (
                "cpu" in controllers and fstype == "cgroup" and "cpu" in opts
            ):
                rel = path
                if root != "/" and (rel == root or rel.startswith(root + "/")):
                    rel = rel[len(root):]
                candidates.append(os.path.join(mnt, rel.lstrip("/"), "cpu.stat"))
    # A container with its own cgroup namespace sees its cgroup as its root.
    candidates.append(f"{proc}/{pid}/root/sys/fs/cgroup/cpu.stat")
    candidates.append(f"{proc}/{pid}/root/sys/fs/cgroup/cpu/cpu.stat")
    for cand in candidates:
        if os.path.isfile(cand):
            return cand
    return None


def read_cpu_stat(path: str) -> Dict[str, int]:
    """cpu.stat as numbers; v1's ``throttled_time`` (ns) also as v2's ``throttled_usec``."""
    out: Dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        return {}
    if "throttled_usec" not in out and "throttled_time" in out:
        out["throttled_usec"] = out["throttled_time"] // 1000
    return out
