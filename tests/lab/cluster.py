"""`Lab`: start, attach to, control and stop an emulated cluster (the daemon in daemon.py).

    from lab.cluster import Lab
    lab = Lab(prefix="h7lab").start()      # or Lab.attach("/tmp/offwake-lab")
    subprocess.run(["kubectl", "--kubeconfig", str(lab.kubeconfig), "get", "pods", "-A"])
    lab.deny("create", "pods", namespace="offwake-system")
    lab.stop()

Standard library only (plus PyYAML, which the daemon needs anyway).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from .runtime import Ledger, netns_list, proc_start_time, sweep

TESTS_DIR = Path(__file__).resolve().parent.parent


class LabError(RuntimeError):
    """The lab could not start, or a control call failed."""


class Lab:
    """Handle on one lab. Every lab needs a unique `prefix` (netns names, default state dir)."""

    def __init__(
        self,
        prefix: str = "offwake-lab",
        state_dir: Optional[Path] = None,
        nodes: Optional[List[str]] = None,
        namespaces: Optional[List[str]] = None,
        python: str = sys.executable,
        systemd_cgroup: bool = True,
    ) -> None:
        self.prefix = prefix
        self.state_dir = Path(state_dir or f"/tmp/{prefix}")
        # "name" or "name:runtime" (runtime: containerd, crio, docker)
        self.nodes = nodes or ["lab-node-1", "lab-node-2"]
        self.namespaces = namespaces or ["default", "kube-system", "app"]
        self.python = python
        self.systemd_cgroup = systemd_cgroup
        self.info: Dict[str, Any] = {}
        self._proc: Optional[subprocess.Popen[bytes]] = None

    # ------------------------------------------------------------ lifecycle

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def registry(self) -> str:
        """`127.0.0.1:PORT` of the lab's image registry (also in `<state_dir>/registry`)."""
        return str(self.info["registry"])

    @property
    def server(self) -> str:
        return str(self.info["server"])

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    def token(self, user: str = "admin") -> str:
        return str(self.info["tokens"][user])

    def running(self) -> bool:
        pid_file = self.state_dir / "daemon.pid"
        if not (self.state_dir / "ready").exists() or not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            return False
        return proc_start_time(pid) is not None

    @classmethod
    def attach(cls, state_dir: Path | str) -> Lab:
        """A handle on a lab already started (by `tests/lab/up` or another process)."""
        info = json.loads((Path(state_dir) / "lab.json").read_text())
        lab = cls(prefix=info["prefix"], state_dir=Path(state_dir), nodes=info["nodes"])
        lab.info = info
        if not lab.running():
            raise LabError(f"the lab in {state_dir} is not running; start it with tests/lab/up")
        return lab

    def start(self, timeout: float = 30.0) -> Lab:
        """Start the daemon in the background and wait until it serves."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces and cgroups)")
        if self.running():
            raise LabError(f"a lab is already running in {self.state_dir}; run tests/lab/down")
        self._cleanup_stale()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for name in ("ready", "lab.json", "kubeconfig", "registry"):
            (self.state_dir / name).unlink(missing_ok=True)
        cmd = [self.python, "-m", "lab.daemon", "--state-dir", str(self.state_dir),
               "--prefix", self.prefix, "--nodes", ",".join(self.nodes),
               "--namespaces", ",".join(self.namespaces)]
        if not self.systemd_cgroup:
            cmd.append("--no-systemd-cgroup")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(TESTS_DIR) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = (self.state_dir / "daemon.log").open("ab")
        self._proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd="/", start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.state_dir / "ready").exists():
                self.info = json.loads((self.state_dir / "lab.json").read_text())
                return self
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            proc.kill()
        tail = (self.state_dir / "daemon.log").read_text(errors="replace")[-3000:]
        raise LabError(f"the lab did not start; daemon log:\n{tail}")

    def stop(self, timeout: float = 60.0) -> List[str]:
        """Stop the daemon (it stops every pod) and sweep whatever the ledger still lists.

        Returns the leftovers this sweep had to remove (empty when the daemon cleaned up).
        """
        pid_file = self.state_dir / "daemon.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError):
                pid = int(pid_file.read_text())
                start = proc_start_time(pid)
                if start is not None:
                    os.kill(pid, signal.SIGTERM)
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline and proc_start_time(pid) == start:
                        time.sleep(0.05)
                    if proc_start_time(pid) == start:
                        os.kill(pid, signal.SIGKILL)
                        time.sleep(0.2)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        left = self._cleanup_stale()
        for name in ("ready", "daemon.pid", "registry"):
            (self.state_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        shutil.rmtree(self.state_dir / "images", ignore_errors=True)
        return left

    def _cleanup_stale(self) -> List[str]:
        ledger = Ledger(self.state_dir / "ledger.jsonl")
        left = sweep(ledger, self.prefix, self.systemd_cgroup)
        if ledger.path.exists():
            ledger.path.rename(ledger.path.with_suffix(".done"))
        return left

    def leftovers(self) -> List[str]:
        """Processes, netns and cgroups of this lab that still exist (for cleanup checks)."""
        out: List[str] = []
        for e in Ledger(self.state_dir / "ledger.jsonl").entries():
            if e["kind"] == "pid" and e.get("start") and \
                    proc_start_time(int(str(e["pid"]))) == e["start"]:
                out.append(f"pid {e['pid']}")
            if e["kind"] == "cgroup" and Path("/sys/fs/cgroup/unified", str(e["path"])).exists():
                out.append(f"cgroup {e['path']}")
        out += [f"netns {n}" for n in netns_list(f"{self.prefix}-pod-")]
        return sorted(set(out))

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ control

    def control(self, op: str, **args: Any) -> Dict[str, Any]:
        req = urllib.request.Request(
            self.server + "/lab/control", method="POST",
            data=json.dumps({"op": op, **args}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token()}"})
        ctx = ssl.create_default_context(cafile=str(self.info["ca"]))
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            raise LabError(f"lab control {op} failed: {exc.read().decode(errors='replace')}") \
                from exc

    def deny(self, verb: str, resource: str, namespace: Optional[str] = None,
             group: str = "*", user: Optional[str] = None, name: Optional[str] = None) -> None:
        """Make RBAC refuse `verb` on `resource` (e.g. "pods", "pods/log") for everyone/user."""
        rule: Dict[str, Any] = {"verbs": [verb], "resources": [resource]}
        if group != "*":
            rule["apiGroups"] = [group]
        if namespace is not None:
            rule["namespaces"] = [namespace]
        if user is not None:
            rule["users"] = [user]
        if name is not None:
            rule["resourceNames"] = [name]
        self.control("deny", **rule)

    def clear_denials(self) -> None:
        self.control("clear_denials")

    def set_rules(self, user: str, rules: List[Dict[str, Any]]) -> None:
        """Replace a user's RBAC PolicyRules (lab extension: optional `namespaces` list)."""
        self.control("set_rules", user=user, rules=rules)

    def fail_image_pull(self, pattern: str) -> None:
        """Images matching this regex stay in ErrImagePull/ImagePullBackOff."""
        self.control("fail_image_pull", pattern=pattern)

    def reject(self, resource: str, message: str, namespace: Optional[str] = None,
               name: Optional[str] = None, label_selector: Optional[str] = None,
               code: int = 400) -> None:
        """A validating-webhook-like denial of CREATE on matching objects."""
        self.control("reject", resource=resource, message=message, namespace=namespace,
                     name=name, label_selector=label_selector, code=code)

    def oom_kill(self, namespace: str, pod: str, container: str) -> bool:
        """Kill a container as the OOM killer would (status reason OOMKilled, exit 137)."""
        return bool(self.control("oom_kill", namespace=namespace, pod=pod,
                                 container=container)["ok"])

    def cut_logs(self, namespace: Optional[str] = None, pod: Optional[str] = None) -> None:
        """Drop every open `logs -f` stream (of one pod, or all) without a clean end."""
        self.control("cut_logs", namespace=namespace, pod=pod)

    def pod_runtime(self, namespace: str, pod: str) -> Dict[str, Any]:
        """Netns, pod IP, cgroup slice and per-container id/pid/cgroup/pids of a running pod."""
        return self.control("pod_runtime", namespace=namespace, pod=pod)

    def pause_node(self, node: str, paused: bool = True) -> None:
        """Hold a node's kubelet: new containers there stay ContainerCreating (pod Pending)."""
        self.control("pause_node", node=node, paused=paused)

    def reset(self) -> None:
        """Clear denials, admission rules, image-pull failures and paused nodes."""
        self.control("reset")

    # ------------------------------------------------------------ convenience

    def kubectl(self, *args: str, context: Optional[str] = None, check: bool = True,
                input: Optional[str] = None, timeout: float = 60.0,
                ) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig)]
        if context:
            cmd += ["--context", context]
        return subprocess.run(cmd + list(args), check=check, capture_output=True, text=True,
                              input=input, timeout=timeout)

    def env(self) -> Dict[str, str]:
        """os.environ with KUBECONFIG pointing at this lab."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env


def private_lab(family: str) -> Lab:
    """A lab of this process's own (prefix ``FAMILY-PID``, so two pytest runs at once do not
    meet), started after removing what labs of the same family left behind when their
    process was killed before its fixture could stop them: their processes, cgroups,
    network namespaces and state directory (the ledger in it lists them). A lab whose
    process still runs is left alone."""
    for prefix in sorted(_orphans(family)):
        Lab(prefix=prefix).stop()
        shutil.rmtree(Path("/tmp") / prefix, ignore_errors=True)
    return Lab(prefix=f"{family}-{os.getpid()}").start()


def _orphans(family: str) -> List[str]:
    """Prefixes ``FAMILY-PID`` of labs (by state directory or network namespace) whose
    process is gone."""
    names = [p.name for p in Path("/tmp").glob(f"{family}-*")]
    names += [n.split("-pod-", 1)[0] for n in netns_list(f"{family}-")]
    orphans = []
    for name in set(names):
        owner = name[len(family) + 1:]
        if owner.isdigit() and int(owner) != os.getpid() and proc_start_time(int(owner)) is None:
            orphans.append(name)
    return orphans
