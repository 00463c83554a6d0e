"""End to end: the real plugin executable against the emulated cluster of tests/lab.

Pods are created from YAML with the real ``kubectl``. The collector image is the one
``image/build`` builds (cached: one build per CI run), pushed to the lab's registry and
chosen the way a user chooses it, ``kubectl offwake setup --image REF``; the lab's kubelet
pulls it and runs the collector in the image's root filesystem. Images the registry does
not have (``istio/proxyv2``, ``busybox``) run on this machine's filesystem, so an
"istio-proxy" container here is the demo's pilot-agent stand-in with a real Envoy as its
child.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

from kubectl_offwake.k8s.podspec import COLLECTOR_SELECTOR

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

COLLECTOR_NS = "offwake-system"
ADMIN_DIR = "/var/run/offwake-envoy"
#: Where the e2e tests push the collector image in the lab's registry.
REPOSITORY = "offwake-collector"


def envoy_binary() -> str:
    from kubectl_offwake.demo.binaries import find_envoy

    return find_envoy()


def plugin_command() -> List[str]:
    """The installed executable (what kubectl runs), else the module."""
    found = shutil.which("kubectl-offwake")
    return [found] if found else [sys.executable, "-m", "kubectl_offwake"]


def registry_of(lab) -> str:
    """The lab's registry, ``127.0.0.1:PORT`` (the file ``registry`` of its state dir)."""
    path = Path(lab.state_dir) / "registry"
    assert path.exists(), f"the lab has no registry ({path} is missing)"
    return path.read_text().strip()


def build_and_push(ref: str) -> str:
    """``image/build --push REF`` (cached: a second call with unchanged inputs is quick);
    returns the digest it printed."""
    done = subprocess.run([str(REPO / "image" / "build"), "--push", ref], capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, f"image/build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    match = re.search(r"^digest: (sha256:[0-9a-f]{64})$", done.stdout, re.M)
    assert match, f"image/build printed no digest:\n{done.stdout[-3000:]}"
    return match.group(1)


@pytest.fixture(scope="session")
def cluster():
    """A running lab with the collector image built, pushed to its registry and chosen with
    `kubectl offwake setup --image` (through the real kubectl), as a user would.

    Attaches to $OFFWAKE_LAB_STATE (a lab from tests/lab/up) when set; otherwise starts a
    private lab whose prefix differs from the one tests/lab's own fixture picks, so both
    suites can run in one pytest session. ``cluster.image`` is the image reference.
    """
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, cgroups)")
    assert shutil.which("kubectl"), "the end-to-end tests need kubectl (tests/bootstrap)"
    from lab.cluster import Lab, private_lab

    state = os.environ.get("OFFWAKE_LAB_STATE")
    handle = Lab.attach(state) if state else private_lab("offwake-e2e")
    try:
        handle.image = f"{registry_of(handle)}/{REPOSITORY}:e2e"
        build_and_push(handle.image)
        done = subprocess.run(["kubectl", "offwake", "setup", "--image", handle.image],
                              env=handle.env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"collector image: {handle.image} (the cluster's choice" in done.stderr
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
        for name in ("OFFWAKE_DEBUG", "OFFWAKE_IMAGE"):  # the cluster's choice decides
            env.pop(name, None)
        return env

    def argv(self, *args: str) -> List[str]:
        return plugin_command() + list(args)

    def run(self, *args: str, timeout: float = 180, env: Optional[Dict[str, str]] = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.workdir, env={**self.env(), **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

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


def envoy_target(lab, ns: str, pod: str, node: Optional[str] = None):
    """Namespace ``ns`` with the Envoy pod ``pod`` in it (on ``node``), its Envoy ready: the
    target of a module's runs. Returns the lab."""
    apply(lab, [namespace(ns)])
    apply(lab, envoy_pod(pod, namespace=ns, node=node))
    wait_envoy_ready(lab, ns, pod)
    return lab


def _has_workers(pid: int) -> bool:
    try:
        names = [(t / "comm").read_text().strip() for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    return any(n.startswith("wrk:worker") for n in names)


def envoy_pod(name: str, namespace: str = "app", node: Optional[str] = None,
              native: bool = False, host_network: bool = False, dns_port: int = 53,
              health_port: int = 15021, inbound_port: int = 15006,
              labels: Optional[Dict[str, str]] = None, app_name: str = "app",
              app_command: Optional[List[str]] = None) -> List[dict]:
    """A ConfigMap with Envoy's bootstrap and a pod whose istio-proxy container runs the
    pilot-agent stand-in, which starts Envoy as its child (as Istio's sidecar does), beside
    an app container (``app_command``, by default one that only sleeps)."""
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
    app = {"name": app_name, "image": "docker.io/library/busybox:1.36",
           "command": app_command or ["sleep", "100000"]}
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
        data = get_json(lab, kind, "-n", ns, "-l", COLLECTOR_SELECTOR)
        out += [f"{kind}/{item['metadata']['name']}" for item in data.get("items", [])]
    return out


def collector_namespace_contents(lab) -> List[str]:
    """Every pod and ConfigMap in offwake-system, whoever made it (labels or not)."""
    out = []
    for kind in ("pods", "configmaps"):
        data = get_json(lab, kind, "-n", COLLECTOR_NS)
        out += [f"{kind}/{item['metadata']['name']}" for item in data.get("items", [])]
    return sorted(out)


def _foreign_netns(lab) -> set:
    """Network namespaces of other labs on this machine (other people's tests run too)."""
    out = set()
    for entry in Path("/run/netns").glob("*"):
        if not entry.name.startswith(f"{lab.prefix}-"):
            try:
                out.add(os.stat(entry).st_ino)
            except OSError:
                continue
    return out


def collector_processes(lab) -> List[int]:
    """Collector processes still alive on this machine (the zipapp in their argv), except
    those in another lab's pods: a collector of this lab that outlived its pod's network
    namespace still counts."""
    foreign = _foreign_netns(lab)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(arg.endswith(b"/opt/offwake/collector.pyz") for arg in argv):
                continue
            if os.stat(entry / "ns" / "net").st_ino in foreign:
                continue
        except OSError:
            continue
        pids.append(int(entry.name))
    return pids


def assert_clean(lab, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed_leftovers(lab) and not collector_processes(lab):
            return
        time.sleep(0.3)
    assert managed_leftovers(lab) == []
    assert collector_processes(lab) == []


def pod_name_in(stderr: str) -> str:
    """The collector pod a run names in its progress lines (`(offwake-system/NAME)`)."""
    match = re.search(r"\((offwake-system)/(offwake-[a-z0-9-]+)\)", stderr)
    assert match, stderr
    return match.group(2)


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


# -- images derived from the built one (the registry API, standard library only) -------------

_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json, "
                   "application/vnd.docker.distribution.manifest.v2+json")


def _registry(method: str, url: str, data: Optional[bytes] = None,
              headers: Optional[Dict[str, str]] = None) -> tuple:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read(), response.headers


def _push_blob(base: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, headers = _registry("POST", f"{base}/blobs/uploads/")
    location = headers["Location"]
    if location.startswith("/"):
        location = base.split("/v2/")[0] + location
    sep = "&" if "?" in location else "?"
    _registry("PUT", f"{location}{sep}digest={digest}", data,
              {"Content-Type": "application/octet-stream"})
    return digest


def push_with_file(registry: str, source_tag: str, tag: str, path: str, content: bytes) -> str:
    """Push ``REPOSITORY:tag``: the image ``REPOSITORY:source_tag`` plus one layer adding the
    file ``path``. Returns the new reference. A real image, pulled and run by the lab's
    runtime like any other; nothing of the product knows about it."""
    base = f"http://{registry}/v2/{REPOSITORY}"
    raw, headers = _registry("GET", f"{base}/manifests/{source_tag}",
                             headers={"Accept": _MANIFEST_TYPES})
    manifest = json.loads(raw)
    media = headers.get("Content-Type", "").split(";")[0]
    config = json.loads(_registry("GET", f"{base}/blobs/{manifest['config']['digest']}")[0])
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    layer = tar_bytes.getvalue()
    gz = gzip.compress(layer, mtime=0)
    layer_digest = _push_blob(base, gz)
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(layer).hexdigest())
    config.setdefault("history", []).append({"created_by": f"tests/e2e: add {path}"})
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": _push_blob(base, config_bytes),
                          "size": len(config_bytes)}
    oci = "oci" in media
    manifest["layers"].append({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" if oci
        else "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "digest": layer_digest, "size": len(gz)})
    _registry("PUT", f"{base}/manifests/{tag}", json.dumps(manifest).encode(),
              {"Content-Type": media})
    return f"{registry}/{REPOSITORY}:{tag}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
