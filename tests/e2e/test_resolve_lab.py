"""TARGET resolution against the lab's API (the real client, real workload controllers).

The pure rules are unit-tested in tests/unit/test_k8s_targets.py; this checks the API
side: workload selectors, owner-made pods, node and label forms, the cap.
"""

from __future__ import annotations

import time

import pytest

from kubectl_offwake.errors import BadInput
from kubectl_offwake.k8s.api import Cluster
from kubectl_offwake.k8s.config import load
from kubectl_offwake.k8s.resolve import resolve

from .conftest import apply, get_json, namespace

pytestmark = [pytest.mark.lab, pytest.mark.root]

NS = "h7resolve"


def _template(app: str) -> dict:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "app", "image": "busybox", "command": ["sleep", "100000"]},
            {"name": "istio-proxy", "image": "proxyv2", "command": ["sleep", "100000"]}]},
    }


@pytest.fixture(scope="module")
def api(cluster):
    apply(cluster, [namespace(NS)])
    selector = {"matchLabels": {"app": "agent"}}
    apply(cluster, [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent",
                                                                   "namespace": NS},
         "spec": {"selector": selector, "template": _template("agent")}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db",
                                                                     "namespace": NS},
         "spec": {"replicas": 2, "serviceName": "db",
                  "selector": {"matchLabels": {"app": "db"}}, "template": _template("db")}},
    ])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = get_json(cluster, "pods", "-n", NS)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running" and all(
            s.get("containerID") for s in p["status"].get("containerStatuses") or [])]
        if len(running) >= 4:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the DaemonSet and StatefulSet pods did not run")
    return Cluster(load(kubeconfig=str(cluster.kubeconfig), namespace=NS))


def test_daemonset_one_target_per_node(api):
    found = resolve(api, "ds/agent", NS)
    assert sorted(t.node for t in found.targets) == ["lab-node-1", "lab-node-2"]
    assert {t.container for t in found.targets} == {"istio-proxy"}
    assert all(len(t.container_id) == 64 and t.runtime == "containerd" for t in found.targets)


def test_statefulset_and_selector_and_node_forms(api):
    assert sorted(t.pod for t in resolve(api, "sts/db", NS).targets) == ["db-0", "db-1"]
    by_label = resolve(api, None, NS, selector="app=db")
    assert sorted(t.pod for t in by_label.targets) == ["db-0", "db-1"]
    on_node = resolve(api, "node/lab-node-1", NS)
    assert on_node.targets and {t.node for t in on_node.targets} == {"lab-node-1"}
    everything = resolve(api, "istio-proxy", NS)
    assert len(everything.targets) == 4
    only_app = resolve(api, "app", NS)  # a container name picks that container
    assert {t.container for t in only_app.targets} == {"app"}


def test_cap_and_unknown_workload(api):
    with pytest.raises(BadInput, match="matches 4 running pods, more than --max-pods 3"):
        resolve(api, "istio-proxy", NS, max_pods=3)
    with pytest.raises(BadInput, match="deployment 'nope' not found in namespace h7resolve"):
        resolve(api, "deploy/nope", NS)
