"""Every way a run can go wrong, end to end: one clear sentence, the right exit code, what
was collected still reported, and never a collector pod or ConfigMap left behind."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import signal
import time

import pytest

from kubectl_offwake.k8s import preflight

from .conftest import (
    COLLECTOR_NS,
    apply,
    assert_clean,
    b64,
    envoy_pod,
    envoy_target,
    get_json,
    managed_leftovers,
    namespace,
    pod_name_in,
    read_until,
)

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

NS = "h7fail"
POD = "envoy-f1"


@pytest.fixture(scope="module")
def target(cluster):
    """One Envoy pod in its own namespace, a pod without Envoy, a pod that never runs."""
    envoy_target(cluster, NS, POD, "lab-node-2")
    plain = envoy_pod("plain-1", namespace=NS)[1]
    plain["spec"]["containers"] = plain["spec"]["containers"][:1]
    plain["spec"]["volumes"] = []
    stuck = envoy_pod("stuck-1", namespace=NS)
    stuck[1]["spec"]["containers"][1]["image"] = "registry.invalid/istio/proxyv2:1"
    apply(cluster, [plain, *stuck])
    return cluster


# -- bad targets ---------------------------------------------------------------------------


def test_unknown_pod(target, plugin):
    done = plugin.run("pod/nope", "-n", NS)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: pod 'nope' not found in namespace {NS}; check the "
                                   f"name and -n (kubectl get pods -n {NS})")
    done = plugin.run("nope", "-n", NS)
    assert done.returncode == 2
    assert "no pod named 'nope' and no pod with a container named 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_pod_without_envoy(target, plugin):
    done = plugin.run("plain-1", "-n", NS)
    assert done.returncode == 2
    assert "has no istio-proxy container and none runs envoy (containers: app)" in done.stderr


def test_pod_not_running(target, plugin):
    done = plugin.run("stuck-1", "-n", NS)
    assert done.returncode == 1
    # a real kubelet keeps such a pod Pending, the lab calls it Running: either way refused
    assert re.search(rf"pod {NS}/stuck-1 is not (running: it is Pending|ready to trace: "
                     r"container istio-proxy is waiting)", done.stderr), done.stderr
    assert "ErrImagePull" in done.stderr or "ImagePullBackOff" in done.stderr


# -- permissions ---------------------------------------------------------------------------

REQUIRED = [p for p in preflight.resolve_permissions(NS, None)
            + preflight.run_permissions(COLLECTOR_NS) if not p.optional]


@pytest.mark.parametrize("perm", REQUIRED, ids=lambda p: p.describe().replace(" ", "_"))
def test_each_missing_permission_is_named_before_anything_is_created(target, plugin, perm):
    resource = f"{perm.resource}/{perm.subresource}" if perm.subresource else perm.resource
    target.deny(perm.verb, resource, namespace=perm.namespace)
    done = plugin.run(POD, "-n", NS, "--duration", "3s")
    assert done.returncode == 1, done.stderr
    assert f"you are not allowed to {perm.describe()};" in done.stderr
    assert "manifests/" in done.stderr
    assert managed_leftovers(target) == []


def test_several_missing_permissions_are_all_named(target, plugin):
    target.deny("create", "pods", namespace=COLLECTOR_NS)
    target.deny("get", "pods/log", namespace=COLLECTOR_NS)
    done = plugin.run(POD, "-n", NS)
    assert done.returncode == 1
    assert (f"create pods in namespace {COLLECTOR_NS}, get pods/log in namespace "
            f"{COLLECTOR_NS}") in done.stderr


# -- the collector namespace and admission ---------------------------------------------------


def test_collector_namespace_missing(target, plugin):
    done = plugin.run(POD, "-n", NS, "--collector-namespace", "h7-missing")
    assert done.returncode == 1
    assert "the collector namespace h7-missing does not exist; run `kubectl offwake setup`" \
        in done.stderr


def test_pod_security_rejection(target, plugin):
    apply(target, [namespace("h7-baseline", {"pod-security.kubernetes.io/enforce": "baseline"})])
    done = plugin.run(POD, "-n", NS, "--collector-namespace", "h7-baseline")
    assert done.returncode == 1
    assert "namespace h7-baseline does not allow privileged pods" in done.stderr
    assert "violates PodSecurity" in done.stderr and "kubectl offwake setup" in done.stderr
    assert managed_leftovers(target, "h7-baseline") == []  # its ConfigMap went too


def test_admission_denied(target, plugin):
    target.reject("pods", "privileged pods need a ticket", namespace=COLLECTOR_NS)
    done = plugin.run(POD, "-n", NS)
    assert done.returncode == 1
    assert "admission denied the collector pod" in done.stderr
    assert "privileged pods need a ticket" in done.stderr
    assert_clean(target)


def test_image_pull_failure(target, plugin):
    done = plugin.run(POD, "-n", NS, "--image", "registry.invalid/offwake:1")
    assert done.returncode == 1
    assert "collector image: registry.invalid/offwake:1 (from --image)" in done.stderr
    assert "cannot pull the collector image registry.invalid/offwake:1" in done.stderr
    assert "image/build --push REF" in done.stderr and "setup --image REF" in done.stderr
    assert_clean(target)


def test_a_replaced_collector_configmap_is_refused(target, plugin):
    """What runs privileged is what was sent: the ConfigMap swapped for other bytes while
    the pod waits for its node, the pod's hash check refuses to run them."""
    target.pause_node("lab-node-2")
    proc = plugin.start(POD, "-n", NS, "--duration", "5s")
    try:
        seen = read_until(proc, "collector pod created", 60)
        name = pod_name_in(seen)
        sent = get_json(target, "configmap", "-n", COLLECTOR_NS, name)
        assert sent["immutable"] is True
        pod = get_json(target, "pod", "-n", COLLECTOR_NS, name)
        command = pod["spec"]["containers"][0]["command"]
        zipapp = base64.b64decode(sent["binaryData"]["collector.pyz"])
        assert hashlib.sha256(zipapp).hexdigest() in command
        target.kubectl("delete", "configmap", "-n", COLLECTOR_NS, name)
        apply(target, [{"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "namespace": COLLECTOR_NS,
                                     "labels": sent["metadata"]["labels"]},
                        "binaryData": {"collector.pyz": b64(zipapp + b"\n# changed\n")}}])
    finally:
        target.pause_node("lab-node-2", False)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = seen + err
    assert proc.returncode == 1, err
    assert (f"error: the collector on node lab-node-2 refused to run: the zipapp in ConfigMap "
            f"{COLLECTOR_NS}/{name} is not the one this plugin sent") in err
    assert "Traceback" not in err and out == ""
    assert_clean(target)


# -- the collector dies, the stream drops ---------------------------------------------------


@pytest.mark.parametrize("how", ["segv", "oom"])
def test_collector_crash_reports_what_was_collected(target, plugin, how):
    proc = plugin.start(POD, "-n", NS, "--duration", "60s", "-o", "json")
    try:
        seen = read_until(proc, "collector tracing", 60)
        name = pod_name_in(seen)
        time.sleep(5)  # a couple of snapshots (interval 2 s)
        if how == "oom":
            assert target.oom_kill(COLLECTOR_NS, name, "collector")
        else:
            runtime = target.pod_runtime(COLLECTOR_NS, name)
            os.kill(int(runtime["containers"]["collector"]["pid"]), signal.SIGSEGV)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = seen + err
    assert proc.returncode == 1, err
    if how == "oom":
        assert "ran out of memory (OOMKilled)" in err
    else:
        assert "exited with code 139 (killed by SIGSEGV)" in err
    report = json.loads(out)
    assert report["wakeups"], "what was collected before the crash is reported"
    assert report["source"]["complete"] is False
    assert [f["source"] for f in report["source"]["failures"]] == ["lab-node-2"]
    assert "the report shows what was collected, marked incomplete" in err
    assert_clean(target)


def test_log_stream_cut_mid_run_resumes_without_loss(target, plugin):
    proc = plugin.start(POD, "-n", NS, "--duration", "8s", "-o", "json", "--save", "cut.jsonl")
    try:
        seen = read_until(proc, "collector tracing", 60)
        time.sleep(2)
        target.cut_logs(namespace=COLLECTOR_NS)
        time.sleep(2)
        target.cut_logs(namespace=COLLECTOR_NS)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen + err
    assert "resumed without loss" in err
    lines = [json.loads(x) for x in (plugin.workdir / "cut.jsonl").read_text().splitlines()]
    seqs = [r["seq"] for r in lines if "seq" in r]  # the client's own records have none
    assert seqs == list(range(1, len(seqs) + 1))  # every record once, none missing
    assert {r["type"] for r in lines if "seq" not in r} == {"client", "identity"}
    assert lines[1]["type"] == "client" and lines[1]["command"] == "kubectl offwake TARGET"
    assert lines[-1]["type"] == "identity" and any(r["type"] == "end" for r in lines)
    assert json.loads(out)["wakeups"]
    assert_clean(target)


# -- Ctrl-C and kill -9 ------------------------------------------------------------------------


@pytest.mark.parametrize("when,sig", [
    ("collector pod created", signal.SIGINT), ("collector running", signal.SIGINT),
    ("collector tracing", signal.SIGINT), ("collector tracing", signal.SIGTERM)],
    ids=["sigint-pending", "sigint-running", "sigint-streaming", "sigterm-streaming"])
def test_sigint(target, plugin, when, sig):
    proc = plugin.start(POD, "-n", NS, "--duration", "60s", "-o", "json", "--save", "i.jsonl.gz")
    try:
        seen = read_until(proc, when, 60)
        if when == "collector tracing":
            time.sleep(4)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = seen + err
    assert "Traceback" not in err
    if when == "collector tracing":
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert report["wakeups"]
        with gzip.open(plugin.workdir / "i.jsonl.gz", "rt") as handle:
            end = [json.loads(x) for x in handle if '"type":"end"' in x]
        assert end and end[0]["reason"] == "signal"  # the collector flushed on SIGTERM
    else:
        assert proc.returncode in (0, 130), err
        if proc.returncode == 130:
            assert "nothing was collected" in err
    assert_clean(target)


def test_sigkill_leaves_a_pod_that_cleanup_removes(target, plugin):
    proc = plugin.start(POD, "-n", NS, "--duration", "60s")
    try:
        seen = read_until(proc, "collector tracing", 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = pod_name_in(seen)
    pod = get_json(target, "pod", "-n", COLLECTOR_NS, name)
    assert pod["spec"]["activeDeadlineSeconds"] <= 60 + 120  # the deadline would stop it
    assert managed_leftovers(target) == [f"pods/{name}", f"configmaps/{name}"]
    cm = get_json(target, "configmap", "-n", COLLECTOR_NS, name)
    owners = cm["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["uid"]) for o in owners] == [("Pod", pod["metadata"]["uid"])]
    done = plugin.run("cleanup")
    assert done.returncode == 0, done.stderr
    assert f"deleted pod/{name}" in done.stderr
    assert_clean(target)
