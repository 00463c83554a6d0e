"""Small helpers for tests that drive the lab (shared with other test packages)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

from .cluster import Lab

T = TypeVar("T")


def wait_for(fn: Callable[[], Optional[T]], timeout: float = 15.0, interval: float = 0.1,
             what: str = "condition") -> T:
    """Poll fn until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get_json(lab: Lab, *args: str, context: Optional[str] = None) -> Dict[str, Any]:
    out = lab.kubectl("get", *args, "-o", "json", context=context)
    return dict(json.loads(out.stdout))


def pod(lab: Lab, namespace: str, name: str) -> Optional[Dict[str, Any]]:
    res = lab.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def wait_phase(lab: Lab, namespace: str, name: str, phases: List[str],
               timeout: float = 20.0) -> Dict[str, Any]:
    def check() -> Optional[Dict[str, Any]]:
        p = pod(lab, namespace, name)
        return p if p and p.get("status", {}).get("phase") in phases else None
    return wait_for(check, timeout, 0.2, f"pod {namespace}/{name} in {phases}")


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cgroup_v2_path(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
