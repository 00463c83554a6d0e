"""What the demo tests share: running ``kubectl offwake demo`` while watching its steps, and
checking that nothing of a demo remains afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from kubectl_offwake.demo.cgroup import find_v2_root
from kubectl_offwake.demo.cpulimit import find_cpu_controller, group_name
from tests.plugin_cli import plugin_cmd, plugin_env

#: The step printed once the demo node is complete and load flows.
READY_STEP = "✓ wrk sending load"


@dataclass
class Steps:
    """What the demo's set-up steps said: its namespace, addresses and processes."""

    lines: List[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def pids(self) -> Set[int]:
        """Every ``(pid N)`` the steps printed: the demo's own processes."""
        return {int(n) for n in re.findall(r"\bpid (\d+)", self.text)}

    def pid_of(self, what: str) -> int:
        match = re.search(rf"{re.escape(what)}[^\n]*?\(pid (\d+)", self.text)
        assert match, f"no pid for {what!r} in:\n{self.text}"
        return int(match.group(1))

    @property
    def netns(self) -> str:
        match = re.search(r"network namespace (\S+):", self.text)
        assert match, self.text
        return match.group(1)

    @property
    def node_ip(self) -> str:
        match = re.search(r"<-> (\d+\.\d+\.\d+\.\d+)", self.text)
        assert match, self.text
        return match.group(1)


@dataclass
class Finished:
    pid: int
    returncode: int
    stdout: str
    stderr: str
    steps: Steps


def run_demo_cli(args: List[str], cwd: Path, on_ready: Optional[Callable[[Steps], None]] = None,
                 timeout: float = 240) -> Finished:
    """Run the demo; once the node is ready, call ``on_ready`` with the steps so far (the
    demo keeps running meanwhile, tracing)."""
    proc = subprocess.Popen(plugin_cmd("demo", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=plugin_env(), cwd=cwd)
    steps = Steps()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            steps.lines.append(line)
            if READY_STEP in line:
                if on_ready is not None:
                    try:
                        on_ready(steps)
                    except BaseException:
                        os.kill(proc.pid, signal.SIGINT)  # let the demo clean up first
                        proc.communicate(timeout=timeout)
                        raise
                break
        stdout, rest = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    steps.lines.append(rest)
    return Finished(proc.pid, proc.returncode, stdout, steps.text, steps)


@dataclass
class ScenarioRun:
    """A finished ``demo --scenario``: its JSON report, its steps, what was seen live."""

    report: dict
    steps: Steps
    live: Dict[str, Any] = field(default_factory=dict)

    @property
    def stats(self) -> dict:
        [stats] = self.report["envoy_stats"]
        assert stats["admin"], f"envoy's admin was not read: {self.report['warnings']}"
        return stats

    def delta(self, counter: str) -> int:
        return int(self.stats["delta"].get(counter, 0))

    def per_s(self, counter: str) -> float:
        return self.delta(counter) / self.stats["window_s"]

    def accept_wakeups(self) -> int:
        return sum(w["count"] for w in self.report["wakeups"]
                   if w["category"] == "tcp-accept" and w["target"]["role"] == "worker")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def netns_exists(name: str) -> bool:
    """Whether ``ip netns list`` shows the namespace ``name``."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.split()[0] == name for line in listed.splitlines() if line.strip())


def link_exists(name: str) -> bool:
    """Whether ``ip link show`` finds the interface ``name``."""
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def assert_nothing_left(cli_pid: int, pids: Iterable[int]) -> None:
    """No namespace, veth, cgroup (the demo's, Envoy's CPU limit), file or process remains."""
    prefix = f"offwake-demo-{cli_pid}"
    assert not netns_exists(prefix), f"network namespace {prefix} is still there"
    assert not link_exists(f"owd{cli_pid % 10**8}h"), "the demo's veth is still there"
    root = find_v2_root()
    if root is not None:
        assert not os.path.exists(os.path.join(root, prefix)), "the demo's cgroup remains"
    cpu = find_cpu_controller()
    if cpu is not None:
        limit = os.path.join(cpu.root, group_name(prefix))
        assert not os.path.exists(limit), f"envoy's CPU-limit cgroup {limit} remains"
    leftovers = [p for p in os.listdir("/tmp") if p.startswith(prefix)]
    assert not leftovers, f"temporary files remain: {leftovers}"
    deadline = time.monotonic() + 5
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)  # parent-death signals are asynchronous
    still = [pid for pid in pids if alive(pid)]
    assert not still, f"demo processes still running: {still}"


def listening_sockets(netns: str, port: int) -> int:
    """Listening TCP sockets on ``port`` inside ``netns``, counted by ``ss`` (iproute2)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())
