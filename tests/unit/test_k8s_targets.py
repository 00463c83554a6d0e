"""TARGET rules on literal pod data (docs/design.md §3.1): forms, default container, refusals."""

from __future__ import annotations

import pytest

from kubectl_offwake.errors import BadInput, RunFailed
from kubectl_offwake.k8s.targets import (
    TargetSpec,
    group_by_node,
    not_running_reason,
    parse_target,
    pick_container,
    resolve_pod,
    selector_string,
    split_container_id,
)

CID = "0123456789abcdef" * 4


def make_pod(name="web-1", containers=None, init=None, phase="Running", statuses=None,
             init_statuses=None, node="node-1", deleting=False):
    meta = {"name": name, "namespace": "app", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    containers = containers if containers is not None else [
        {"name": "app", "command": ["/app"]}, {"name": "istio-proxy"}]
    if statuses is None:
        statuses = [{"name": c["name"], "containerID": f"containerd://{CID}",
                     "state": {"running": {}}} for c in containers]
    spec = {"containers": containers, "nodeName": node}
    if init is not None:
        spec["initContainers"] = init
    status = {"phase": phase, "containerStatuses": statuses}
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.mark.parametrize("text,kind,name", [
    ("pod/web-1", "pod", "web-1"), ("po/web-1", "pod", "web-1"),
    ("deploy/web", "deployment", "web"), ("deployment.apps/web", "deployment", "web"),
    ("sts/db", "statefulset", "db"), ("ds/agent", "daemonset", "agent"),
    ("rs/web-6b7f", "replicaset", "web-6b7f"), ("job/batch", "job", "batch"),
    ("node/node-1", "node", "node-1"), ("web-1", None, "web-1"),
    ("istio-proxy", None, "istio-proxy"),
])
def test_parse_target_forms(text, kind, name):
    assert parse_target(text) == TargetSpec(kind, name)


@pytest.mark.parametrize("text", ["", "cronjob/x", "pod/", "pod/a/b", "svc/web"])
def test_parse_target_refuses_nonsense(text):
    with pytest.raises(BadInput):
        parse_target(text)


def test_default_container_is_istio_proxy():
    container, native = pick_container(make_pod(), None)
    assert container["name"] == "istio-proxy" and native is False


def test_then_a_container_named_or_running_envoy():
    pod = make_pod(containers=[{"name": "app"},
                               {"name": "proxy", "command": ["/usr/local/bin/envoy", "-c", "x"]}])
    assert pick_container(pod, None)[0]["name"] == "proxy"
    pod = make_pod(containers=[{"name": "app"}, {"name": "envoy"}])
    assert pick_container(pod, None)[0]["name"] == "envoy"


def test_pod_without_envoy_is_refused_listing_its_containers():
    with pytest.raises(BadInput, match=r"no istio-proxy container.*containers: app, web"):
        pick_container(make_pod(containers=[{"name": "app"}, {"name": "web"}]), None)


def test_explicit_container_must_exist():
    assert pick_container(make_pod(), "app")[0]["name"] == "app"
    with pytest.raises(BadInput, match="has no container 'nope'"):
        pick_container(make_pod(), "nope")


def test_native_sidecar_found_in_init_container_statuses():
    pod = make_pod(
        containers=[{"name": "app"}],
        init=[{"name": "istio-init"}, {"name": "istio-proxy", "restartPolicy": "Always"}],
        init_statuses=[
            {"name": "istio-init", "containerID": "containerd://" + "9" * 64,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "istio-proxy", "containerID": f"containerd://{CID}",
             "state": {"running": {}}}],
        statuses=[{"name": "app", "containerID": "containerd://" + "1" * 64,
                   "state": {"running": {}}}],
    )
    target = resolve_pod(pod, None)
    assert target.container == "istio-proxy"
    assert target.native_sidecar is True
    assert target.container_id == CID and target.runtime == "containerd"
    # a plain init container (no restartPolicy Always) is never a candidate
    with pytest.raises(BadInput):
        pick_container(pod, "istio-init")


def test_resolved_target_carries_node_uid_and_runtime_prefix():
    target = resolve_pod(make_pod(), None)
    assert (target.namespace, target.pod, target.pod_uid, target.node) == \
        ("app", "web-1", "uid-web-1", "node-1")
    assert target.qualified_id == f"containerd://{CID}"
    assert target.label() == "app/web-1/istio-proxy"


@pytest.mark.parametrize("pod,why", [
    (make_pod(phase="Pending", statuses=[{"name": "istio-proxy", "state": {
        "waiting": {"reason": "ImagePullBackOff"}}}]), "Pending (istio-proxy: ImagePullBackOff)"),
    (make_pod(phase="Succeeded"), "it is Succeeded"),
    (make_pod(phase="Failed"), "it is Failed"),
    (make_pod(deleting=True), "being deleted"),
])
def test_pods_not_running_are_refused_with_the_reason(pod, why):
    with pytest.raises(RunFailed, match="is not running") as info:
        resolve_pod(pod, None)
    assert why in str(info.value)


def test_container_not_running_in_a_running_pod_is_refused():
    pod = make_pod(statuses=[
        {"name": "app", "containerID": f"containerd://{CID}", "state": {"running": {}}},
        {"name": "istio-proxy", "containerID": f"containerd://{CID}",
         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    with pytest.raises(RunFailed, match="CrashLoopBackOff"):
        resolve_pod(pod, None)
    assert not_running_reason(pod) is None


def test_split_container_id():
    assert split_container_id("cri-o://abc") == ("cri-o", "abc")
    assert split_container_id("abc") == ("", "abc")


def test_selector_string_from_label_selector():
    assert selector_string({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "env", "operator": "Exists"}]}) == "a=1,b=2,tier in (web,api),!canary,env"
    assert selector_string(None) == ""


def test_group_by_node_keeps_one_entry_per_node():
    a = resolve_pod(make_pod("a", node="n1"), None)
    b = resolve_pod(make_pod("b", node="n2"), None)
    c = resolve_pod(make_pod("c", node="n1"), None)
    assert group_by_node([a, b, c]) == {"n1": [a, c], "n2": [b]}
