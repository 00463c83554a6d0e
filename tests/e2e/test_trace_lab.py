"""`kubectl offwake TARGET` end to end: one pod, a fleet, a Deployment, a native sidecar.

The tests in this module build on each other in file order (one pod in `app`, then three
pods over two nodes), as a user's cluster would grow.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys

import pytest
import yaml

from .conftest import (
    COLLECTOR_NS,
    apply,
    assert_clean,
    coredns_pod,
    envoy_pod,
    namespace,
    plugin_command,
    wait_envoy_ready,
    wait_running,
)

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]



def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on the host's loopback now (host-network pods of parallel labs differ)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DNS_PORT = _free_port(socket.SOCK_DGRAM)
HEALTH_PORT = _free_port()
INBOUND_PORT = _free_port()


@pytest.fixture(scope="module")
def mesh(cluster):
    """web-1 (host network) resolving through a coredns stand-in, probed from the host."""
    lab = cluster
    # a lab reused from an earlier run (OFFWAKE_LAB_STATE) may still have these pods
    lab.kubectl("delete", "pod", "-n", "app", "web-1", "web-2", "web-3", "--ignore-not-found",
                "--wait=true", check=False, timeout=120)
    lab.kubectl("delete", "pod", "-n", "kube-system", "coredns-5d78c-h7x2q",
                "--ignore-not-found", "--wait=true", check=False, timeout=120)
    apply(lab, [coredns_pod("coredns-5d78c-h7x2q", DNS_PORT, "lab-node-1")])
    wait_running(lab, "kube-system", "coredns-5d78c-h7x2q")
    apply(lab, envoy_pod("web-1", node="lab-node-1", host_network=True, dns_port=DNS_PORT,
                         health_port=HEALTH_PORT, inbound_port=INBOUND_PORT,
                         labels={"app": "web"}))
    wait_envoy_ready(lab, "app", "web-1")
    prober = subprocess.Popen(
        [sys.executable, "-m", "kubectl_offwake.demo.prober", "--host", "127.0.0.1",
         "--port", str(HEALTH_PORT), "--interval", "0.02"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield lab
    finally:
        prober.terminate()
        prober.wait(10)


def _wakeups(report: dict):
    return report["wakeups"]


def test_kubectl_finds_the_plugin(lab):
    listed = subprocess.run(["kubectl", "plugin", "list"], capture_output=True, text=True)
    assert "kubectl-offwake" in listed.stdout
    helped = subprocess.run(["kubectl", "offwake", "--help"], capture_output=True, text=True,
                            env=lab.env())
    assert helped.returncode == 0
    assert "Why were Envoy's threads off the CPU" in helped.stdout


def test_dry_run_prints_every_manifest_and_creates_nothing(mesh, plugin):
    done = plugin.run("istio-proxy", "-n", "app", "--dry-run", "--duration", "7s")
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert [d["kind"] for d in docs] == ["Pod", "ConfigMap"]
    pod = docs[0]
    assert pod["spec"]["nodeName"] == "lab-node-1"
    assert pod["metadata"]["namespace"] == COLLECTOR_NS
    web = wait_running(mesh, "app", "web-1")
    cid = next(s["containerID"] for s in web["status"]["containerStatuses"]
               if s["name"] == "istio-proxy")
    container = pod["spec"]["containers"][0]
    assert cid in container["command"]
    assert container["image"] == mesh.image  # the cluster's choice, from setup --image
    assert f"# collector image: {mesh.image} (the cluster's choice" in done.stdout
    sha = re.search(r"^# collector zipapp sha256: ([0-9a-f]{64}) ", done.stdout, re.M)
    assert sha and container["command"][:4] == ["python3", "-I", "-u", "-c"]
    assert container["command"][5:7] == [sha.group(1), "/opt/offwake/collector.pyz"]
    assert docs[1]["immutable"] is True
    assert "# privileged: BCC needs" in done.stdout
    assert_clean(mesh, timeout=1)


def test_one_pod_names_envoy_threads_host_prober_and_coredns(mesh, plugin):
    done = plugin.run("istio-proxy", "-n", "app", "--duration", "8s", "-o", "json",
                      "--out", "report.json", "--save", "rec.jsonl.gz")
    assert done.returncode == 0, done.stderr
    assert "recording saved: rec.jsonl.gz" in done.stderr
    report = json.loads((plugin.workdir / "report.json").read_text())
    wakeups = _wakeups(report)
    assert wakeups, report
    targets = {(w["target"]["pod"], w["target"]["container"]) for w in wakeups}
    assert targets == {("app/web-1", "istio-proxy")}
    target_comms = {w["target"]["comm"] for w in wakeups}
    assert "envoy" in target_comms and any(c.startswith("wrk:worker") for c in target_comms)
    wakers = {w["waker"]["name"] for w in wakeups if w.get("waker")}
    assert "host: kubelet" in wakers, sorted(wakers)
    assert "kube-system/coredns-5d78c-h7x2q/coredns" in wakers, sorted(wakers)
    assert "app/web-1/istio-proxy" in wakers  # Envoy's own threads wake each other
    # the saved recording carries the names too, and re-reports the same way
    with gzip.open(plugin.workdir / "rec.jsonl.gz", "rt") as handle:
        types = [json.loads(line)["type"] for line in handle]
    assert types[0] == "hello" and "end" in types and "identity" in types
    again = subprocess.run(plugin_command() + ["report", "rec.jsonl.gz", "-o", "json"],
                           cwd=plugin.workdir, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    rewakers = {w["waker"]["name"] for w in json.loads(again.stdout)["wakeups"] if w.get("waker")}
    assert "kube-system/coredns-5d78c-h7x2q/coredns" in rewakers
    assert_clean(mesh)


@pytest.fixture(scope="module")
def fleet(mesh):
    """Two more Envoy pods: web-2 on lab-node-1 and web-3 on lab-node-2."""
    apply(mesh, envoy_pod("web-2", node="lab-node-1", labels={"app": "web"}))
    apply(mesh, envoy_pod("web-3", node="lab-node-2", labels={"app": "web"}))
    for name in ("web-2", "web-3"):
        wait_envoy_ready(mesh, "app", name)
    return mesh


def test_three_pods_over_two_nodes(fleet, plugin):
    done = plugin.run("istio-proxy", "-n", "app", "--duration", "6s", "--out", "fleet.json")
    assert done.returncode == 0, done.stderr
    assert "tracing 3 container(s) on 2 node(s)" in done.stderr
    merged = json.loads((plugin.workdir / "fleet.json").read_text())
    pods = {w["target"]["pod"] for w in merged["wakeups"]}
    assert pods == {"app/web-1", "app/web-2", "app/web-3"}
    for name in ("web-1", "web-2", "web-3"):
        per_pod = json.loads((plugin.workdir / f"fleet.app_{name}.json").read_text())
        assert {w["target"]["pod"] for w in per_pod["wakeups"]} == {f"app/{name}"}
    recordings = sorted(p.name for p in plugin.workdir.glob("offwake-*.jsonl.gz"))
    assert len(recordings) == 2 and any("lab-node-2" in r for r in recordings)
    assert_clean(fleet)


def test_max_pods_cap(fleet, plugin):
    done = plugin.run("istio-proxy", "-n", "app", "--max-pods", "2")
    assert done.returncode == 2
    assert "matches 3 running pods, more than --max-pods 2" in done.stderr
    assert_clean(fleet, timeout=1)


def test_selector_narrows(fleet, plugin):
    done = plugin.run("istio-proxy", "-n", "app", "-l", "app=web", "--dry-run")
    assert done.returncode == 0, done.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(done.stdout) if d]
    assert kinds.count("Pod") == 2  # one collector per node


def test_deployment(lab, plugin):
    apply(lab, [namespace("shop")])
    pod_docs = envoy_pod("tmpl", namespace="shop")
    apply(lab, [pod_docs[0]])
    template = {"metadata": {"labels": {"app": "cart"}}, "spec": pod_docs[1]["spec"]}
    apply(lab, [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cart"}},
                 "template": template},
    }])
    pods = []
    for _ in range(100):
        pods = json.loads(lab.kubectl("get", "pods", "-n", "shop", "-l", "app=cart",
                                      "-o", "json").stdout)["items"]
        if pods:
            break
        import time

        time.sleep(0.3)
    assert pods, "the Deployment made no pod"
    name = pods[0]["metadata"]["name"]
    wait_envoy_ready(lab, "shop", name)
    done = plugin.run("deploy/cart", "-n", "shop", "--duration", "5s", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {w["target"]["pod"] for w in report["wakeups"]} == {f"shop/{name}"}
    assert_clean(lab)


def test_short_lived_wakers_are_named_by_their_pod_in_one_row(lab, plugin):
    """An app container whose shell loop runs curl against its sidecar: every curl wakes
    Envoy and exits a few milliseconds later, long before the collector's next snapshot.
    The report still names them by pod and container, and as one waker: the same name and
    total in "who woke the threads", the JSON and the findings. (The pod goes at the end:
    its loop would keep a CPU busy through the rest of the session's tests.)"""
    apply(lab, [namespace("demo")])
    loop = "while true; do curl -s -o /dev/null http://127.0.0.1:15006/; sleep 0.02; done"
    apply(lab, envoy_pod("reviews-v1", namespace="demo", native=True, node="lab-node-1",
                         app_name="reviews", app_command=["sh", "-c", loop]))
    try:
        _short_lived_wakers_in_one_row(lab, plugin)
    finally:
        lab.kubectl("delete", "pod", "-n", "demo", "reviews-v1", "--ignore-not-found",
                    "--wait=true", check=False)


def _short_lived_wakers_in_one_row(lab, plugin) -> None:
    wait_envoy_ready(lab, "demo", "reviews-v1")
    done = plugin.run("reviews-v1", "-n", "demo", "--duration", "6s", "-o", "json",
                      "--save", "rec.jsonl.gz")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    name = "demo/reviews-v1/reviews (curl)"
    curl = [w for w in report["wakeups"] if w["cause"] == "waker" and w["waker"]
            and w["waker"]["comm"] == "curl"]
    assert len({w["waker"]["pid"] for w in curl}) >= 20, "too few curls woke Envoy"
    assert {(w["waker"]["pod"], w["waker"]["container"]) for w in curl} == \
        {("demo/reviews-v1", "reviews")}
    # (a curl that preempted Envoy is a row of its own: "preempted by NAME", another cause)
    rows = [g for g in report["by_waker"] if "curl" in g["name"]
            and not g["name"].startswith("preempted by ")]
    assert [g["name"] for g in rows] == [name]
    assert rows[0]["count"] == sum(w["count"] for w in curl)
    for finding in report["findings"]:
        if finding["evidence"].get("waker") and "curl" in finding["evidence"]["waker"]:
            assert finding["evidence"]["waker"] == name, finding
    dominant = [f for f in report["findings"] if f["id"] == "dominant-waker"]
    if dominant and dominant[0]["evidence"]["waker"] == name:
        assert dominant[0]["evidence"]["wakeups"] == rows[0]["count"]
    table = subprocess.run(plugin_command() + ["report", "rec.jsonl.gz"],
                           cwd=plugin.workdir, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    wakers = table.stdout.split("Who woke the threads", 1)[1].split("Target threads", 1)[0]
    rows_named = [line for line in wakers.splitlines() if line.startswith(name)]
    assert len(rows_named) == 1 and "host: curl" not in wakers, wakers
    assert_clean(lab)


def test_native_sidecar(lab, plugin):
    apply(lab, [namespace("native")])
    apply(lab, envoy_pod("native-1", namespace="native", native=True, node="lab-node-2"))
    pod = wait_running(lab, "native", "native-1")
    assert any(s["name"] == "istio-proxy" for s in pod["status"]["initContainerStatuses"])
    wait_envoy_ready(lab, "native", "native-1")
    done = plugin.run("native-1", "-n", "native", "--duration", "5s", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {(w["target"]["pod"], w["target"]["container"]) for w in report["wakeups"]} == \
        {("native/native-1", "istio-proxy")}
    assert_clean(lab)
