"""End to end: the real plugin executable against the emulated cluster of tests/lab.

Pods are created from YAML with the real ``kubectl``. The lab's kubelet runs their
commands as real processes on this machine (images are ignored), so an "istio-proxy"
container here is the demo's pilot-agent stand-in with a real Envoy as its child, and
the collector pod runs the real collector under the system python3 (which has BCC):
the plugin is told so with its hidden ``--collector-python /usr/bin/python3``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

COLLECTOR_NS = "offwake-system"
SYSTEM_PYTHON = "/usr/bin/python3"
ADMIN_DIR = "/var/run/offwake-envoy"


def _need_root_and_bcc() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (the lab makes namespaces and cgroups; the collector loads BPF)"
    if not shutil.which("kubectl"):
        return "needs kubectl"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import bcc"], capture_output=True)
    if probe.returncode != 0:
        return "needs BCC for /usr/bin/python3 (apt-get install python3-bpfcc)"
    return None


def envoy_binary() -> str:
    from kubectl_offwake.demo.binaries import find_envoy

    return find_envoy()


def plugin_command() -> List[str]:
    """The installed executable (what kubectl runs), else the module."""
    found = shutil.which("kubectl-offwake")
    return [found] if found else [sys.executable, "-m", "kubectl_offwake"]


@pytest.fixture(scope="session")
def cluster():
    """A running lab with `kubectl offwake setup` applied (through the real kubectl).

    Attaches to $OFFWAKE_LAB_STATE (a lab from tests/lab/up) when set; otherwise starts a
    private lab whose prefix differs from the one tests/lab's own fixture picks, so both
    suites can run in one pytest session.
    """
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, cgroups)")
    why = _need_root_and_bcc()
    if why:
        pytest.skip(why)
    from lab.cluster import Lab

    state = os.environ.get("OFFWAKE_LAB_STATE")
    handle = Lab.attach(state) if state else Lab(prefix=f"offwake-e2e-{os.getpid()}").start()
    try:
        done = subprocess.run(["kubectl", "offwake", "setup"], env=handle.env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        yield handle
    finally:
        if not state:
            handle.stop()
            left = handle.leftovers()
            assert left == [], f"the lab left {left}"
            shutil.rmtree(handle.state_dir, ignore_errors=True)


@pytest.fixture
def lab(cluster):
    """The same lab per test; denials, admission rules and pull failures reset after it."""
    yield cluster
    cluster.reset()


class Plugin:
    """Runs ``kubectl-offwake`` the way a user does, against the lab."""

    def __init__(self, lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir

    def env(self) -> Dict[str, str]:
        env = self.lab.env()
        env.pop("OFFWAKE_DEBUG", None)
        return env

    def argv(self, *args: str, collector: bool = True) -> List[str]:
        extra = ["--collector-python", SYSTEM_PYTHON] if collector and args and \
            args[0] not in ("setup", "cleanup", "report") else []
        return plugin_command() + list(args) + extra

    def run(self, *args: str, timeout: float = 180, collector: bool = True
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args, collector=collector), cwd=self.workdir,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.workdir, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def plugin(lab, tmp_path):
    return Plugin(lab, tmp_path)


def apply(lab, docs: List[dict]) -> None:
    text = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    done = lab.kubectl("apply", "-f", "-", input=text, check=False)
    assert done.returncode == 0, done.stderr


def namespace(name: str, labels: Optional[Dict[str, str]] = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def get_json(lab, *args: str) -> dict:
    done = lab.kubectl("get", *args, "-o", "json", check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_running(lab, namespace: str, name: str, timeout: float = 60) -> dict:
    """Until the pod runs and every container has an id (Envoy needs a moment more)."""
    deadline = time.monotonic() + timeout
    pod: dict = {}
    while time.monotonic() < deadline:
        pod = get_json(lab, "pod", "-n", namespace, name)
        status = pod.get("status") or {}
        statuses = (status.get("containerStatuses") or []) + \
            (status.get("initContainerStatuses") or [])
        running = [s for s in statuses if "running" in (s.get("state") or {})]
        if status.get("phase") == "Running" and running and all(
                s.get("containerID") for s in running):
            return pod
        time.sleep(0.3)
    raise AssertionError(f"pod {namespace}/{name} did not run: {pod.get('status')}")


def envoy_pids(container_id: str) -> List[int]:
    """Envoy processes in the container with this id (found by cgroup, as the collector does)."""
    cid = container_id.split("://")[-1]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "envoy":
                continue
            if cid in (entry / "cgroup").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_envoy_ready(lab, namespace: str, name: str, timeout: float = 60) -> List[int]:
    """The pod's Envoy runs (started by the pilot-agent stand-in) and has its workers."""
    pod = wait_running(lab, namespace, name)
    status = pod["status"]
    statuses = (status.get("containerStatuses") or []) + \
        (status.get("initContainerStatuses") or [])
    cid = next(s["containerID"] for s in statuses if s["name"] == "istio-proxy")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = envoy_pids(cid)
        if pids and any(Path(f"/proc/{pids[0]}/task").iterdir()) and _has_workers(pids[0]):
            return pids
        time.sleep(0.3)
    raise AssertionError(f"no running envoy in {namespace}/{name}")


def _has_workers(pid: int) -> bool:
    try:
        names = [(t / "comm").read_text().strip() for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    return any(n.startswith("wrk:worker") for n in names)


def envoy_pod(name: str, namespace: str = "app", node: Optional[str] = None,
              native: bool = False, host_network: bool = False, dns_port: int = 53,
              health_port: int = 15021, inbound_port: int = 15006,
              labels: Optional[Dict[str, str]] = None) -> List[dict]:
    """A ConfigMap with Envoy's bootstrap and a pod whose istio-proxy container runs the
    pilot-agent stand-in, which starts Envoy as its child (as Istio's sidecar does)."""
    from kubectl_offwake.demo.envoy_config import EnvoyConfig

    config = EnvoyConfig(admin_socket=f"{ADMIN_DIR}/admin.sock", access_log="/dev/null",
                         dns_ip="127.0.0.1", dns_port=dns_port, health_port=health_port,
                         inbound_port=inbound_port, dns_refresh_ms=50)
    cm_name = f"{name}-envoy"
    sidecar = {
        "name": "istio-proxy",
        "image": "docker.io/istio/proxyv2:1.24.0",
        "command": [sys.executable, "-m", "kubectl_offwake.demo.agent",
                    "--admin-socket", f"{ADMIN_DIR}/admin.sock", "--interval", "0.05",
                    "--", envoy_binary(), "-c", "/etc/istio/proxy/envoy.yaml",
                    "--concurrency", "2", "--disable-hot-restart", "--log-level", "error"],
        "volumeMounts": [{"name": "envoy-config", "mountPath": "/etc/istio/proxy"},
                         {"name": "istio-run", "mountPath": ADMIN_DIR}],
        "env": [{"name": "PYTHONPATH", "value": str(REPO)}],
    }
    app = {"name": "app", "image": "docker.io/library/busybox:1.36",
           "command": ["sleep", "100000"]}
    spec: dict = {
        "containers": [app] if native else [app, sidecar],
        "volumes": [{"name": "envoy-config", "configMap": {"name": cm_name}},
                    {"name": "istio-run", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 2,
    }
    if native:
        sidecar["restartPolicy"] = "Always"
        spec["initContainers"] = [sidecar]
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    meta = {"name": name, "namespace": namespace, "labels": labels or {"app": name}}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": cm_name, "namespace": namespace},
         "data": {"envoy.yaml": config.to_yaml()}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec},
    ]


def coredns_pod(name: str, port: int, node: str) -> dict:
    """A coredns stand-in in kube-system: dnsmasq answering Envoy's STRICT_DNS cluster."""
    from kubectl_offwake.demo.binaries import _need
    from kubectl_offwake.demo.envoy_config import UPSTREAM_HOST

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {
            "nodeName": node, "hostNetwork": True, "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.11.1",
                "command": [_need("dnsmasq", "dnsmasq-base"), "--keep-in-foreground",
                            "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                            "--bind-interfaces", "--listen-address=127.0.0.1",
                            f"--port={port}", f"--host-record={UPSTREAM_HOST},127.0.0.1",
                            "--local-ttl=1", "--pid-file=", "--cache-size=0"],
            }],
        },
    }


def managed_leftovers(lab, ns: str = COLLECTOR_NS) -> List[str]:
    """Collector pods and ConfigMaps still in the cluster (must be none after a run)."""
    out = []
    for kind in ("pods", "configmaps"):
        data = get_json(lab, kind, "-n", ns, "-l",
                        "app.kubernetes.io/managed-by=kubectl-offwake")
        out += [f"{kind}/{item['metadata']['name']}" for item in data.get("items", [])]
    return out


def collector_processes() -> List[int]:
    """Collector processes still alive on this machine (the zipapp in their argv)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"/opt/offwake/collector.pyz") for arg in argv):
            pids.append(int(entry.name))
    return pids


def assert_clean(lab, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed_leftovers(lab) and not collector_processes():
            return
        time.sleep(0.3)
    assert managed_leftovers(lab) == []
    assert collector_processes() == []


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """Read the plugin's stderr line by line until ``needle`` shows (non-blocking-ish)."""
    import selectors

    seen = ""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.2):
            if proc.poll() is not None:
                break
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never appeared; stderr so far:\n{seen}")


def interrupt(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    proc.send_signal(sig)
