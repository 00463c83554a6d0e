"""The lab's kubelets: real processes, containerd-named cgroups, namespaces, lifecycle.

Driven with the real `kubectl` and the real `kubernetes` client, as the plugin will be.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, List

import pytest

from lab.cluster import Lab
from lab.helpers import (
    cgroup_v2_path,
    comm,
    pid_alive,
    pod,
    ppid,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.lab, pytest.mark.root]

MANIFESTS = Path(__file__).with_name("manifests")


def _pod_yaml(name: str, command: str, ns: str = "app", extra_spec: str = "",
              container_extra: str = "", grace: int = 1) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  terminationGracePeriodSeconds: {grace}
{extra_spec}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {json.dumps(command)}]
{container_extra}
"""


def _create(lab: Lab, yaml_text: str) -> subprocess.CompletedProcess[str]:
    return lab.kubectl("create", "-f", "-", input=yaml_text, check=False)


def _delete(lab: Lab, ns: str, name: str) -> None:
    lab.kubectl("delete", "pod", "-n", ns, name, "--ignore-not-found", "--wait=true")


def test_envoy_sidecar_pod_from_yaml(lab: Lab) -> None:
    """kubectl create -f → Running on a node, Envoy a child of the agent, in its cgroup/netns."""
    res = lab.kubectl("create", "-f", str(MANIFESTS / "envoy-pod.yaml"), check=False)
    assert res.returncode == 0, res.stderr
    try:
        p = wait_phase(lab, "app", "productpage-v1", ["Running"])
        node = p["spec"]["nodeName"]
        assert node in ("lab-node-1", "lab-node-2")
        wide = lab.kubectl("get", "pods", "-n", "app", "-o", "wide").stdout
        line = next(x for x in wide.splitlines() if x.startswith("productpage-v1"))
        assert "Running" in line and node in line and "2/2" in line, wide
        statuses = {c["name"]: c for c in p["status"]["containerStatuses"]}
        cid = statuses["istio-proxy"]["containerID"]
        assert cid.startswith("containerd://") and len(cid) == len("containerd://") + 64

        info = lab.pod_runtime("app", "productpage-v1")
        proxy = info["containers"]["istio-proxy"]
        assert proxy["id"] == cid.split("//")[1]
        envoy_pid = wait_for(lambda: next(
            (x for x in lab.pod_runtime("app", "productpage-v1")["containers"]["istio-proxy"]
             ["pids"] if comm(x) == "envoy"), None), what="envoy in the container cgroup")
        # the pilot-agent stand-in is the container's PID 1 and Envoy's parent
        assert ppid(envoy_pid) == proxy["pid"]
        assert comm(proxy["pid"]).startswith("python")
        uid_ = p["metadata"]["uid"].replace("-", "_")
        expected = (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}"
                    f".slice/cri-containerd-{proxy['id']}.scope")
        assert cgroup_v2_path(envoy_pid) == expected
        # own netns (the lab's named one) and own pid namespace; the app container shares
        # the network namespace but not the pid namespace
        netns_ino = os.stat(f"/run/netns/{info['netns']}").st_ino
        assert os.stat(f"/proc/{envoy_pid}/ns/net").st_ino == netns_ino
        assert os.stat(f"/proc/{envoy_pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{envoy_pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        app_pid = info["containers"]["app"]["pid"]
        assert os.stat(f"/proc/{app_pid}/ns/net").st_ino == netns_ino
        assert os.stat(f"/proc/{app_pid}/ns/pid").st_ino != \
            os.stat(f"/proc/{envoy_pid}/ns/pid").st_ino

        # the agent reached Envoy's admin listener inside the pod netns
        logs = wait_for(lambda: (lambda out: out if "envoy ready LIVE" in out else None)(
            lab.kubectl("logs", "-n", "app", "productpage-v1", "-c", "istio-proxy").stdout),
            what="agent log line")
        assert "pilot-agent: started envoy pid 2" in logs  # Envoy is pid 2 in the pod's pidns

        # logs -f streams until the container ends
        follow = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(lab.kubeconfig), "logs", "-f", "-n", "app",
             "productpage-v1", "-c", "istio-proxy", "--tail=1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follow.stdout is not None
        first = follow.stdout.readline()
        second = follow.stdout.readline()
        assert "pilot-agent" in first and "envoy ready" in second

        pids = proxy["pids"] + [envoy_pid, app_pid]
        cgroup_dir = Path("/sys/fs/cgroup/unified") / expected.lstrip("/")
        assert cgroup_dir.is_dir()
        start = time.monotonic()
        lab.kubectl("delete", "pod", "-n", "app", "productpage-v1")
        elapsed = time.monotonic() - start
        # the app container's PID 1 ignores SIGTERM: it takes the 5 s grace period
        assert 4 <= elapsed < 30, elapsed  # (and then killed, not left hanging)
        rest, _ = follow.communicate(timeout=10)
        assert follow.returncode == 0
        assert "pilot-agent: SIGTERM, draining envoy" in rest
        assert not any(pid_alive(x) and comm(x) in ("envoy", "python3") for x in pids)
        assert not cgroup_dir.exists()
        assert not Path(f"/run/netns/{info['netns']}").exists()
        assert pod(lab, "app", "productpage-v1") is None
    finally:
        lab.kubectl("delete", "-f", str(MANIFESTS / "envoy-pod.yaml"), "--ignore-not-found",
                    "--grace-period=0", "--force", check=False)
        lab.kubectl("delete", "configmap", "-n", "app", "pilot-agent", "--ignore-not-found",
                    check=False)


def test_python_client_lists_watches_and_follows_logs(lab: Lab) -> None:
    from kubernetes import client, config, watch

    api: Any = client.CoreV1Api(config.new_client_from_config(str(lab.kubeconfig)))
    body: Any = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "counter", "namespace": "app", "labels": {"role": "counter"}},
        "spec": {"nodeName": "lab-node-2", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox",
                                 "command": ["sh", "-c",
                                             "i=0; while true; do i=$((i+1)); echo line $i; "
                                             "echo err $i >&2; sleep 0.2; done"]}]},
    }
    listed = api.list_namespaced_pod("app", label_selector="role=counter")
    rv = listed.metadata.resource_version
    api.create_namespaced_pod("app", body)
    try:
        seen = []
        w = watch.Watch()
        for ev in w.stream(api.list_namespaced_pod, "app", resource_version=rv,
                           field_selector="metadata.name=counter", timeout_seconds=20):
            obj = ev["object"]
            seen.append((ev["type"], obj.status.phase))
            if obj.status.phase == "Running":
                w.stop()
        assert seen[0][0] == "ADDED"
        assert seen[-1] == ("MODIFIED", "Running")
        # a field selector on spec.nodeName only sees pods of that node
        on_node = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=lab-node-2")
        assert "counter" in [p.metadata.name for p in on_node.items]
        off_node = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=lab-node-1")
        assert "counter" not in [p.metadata.name for p in off_node.items]

        resp = api.read_namespaced_pod_log("counter", "app", container="c", follow=True,
                                           timestamps=True, _preload_content=False)
        lines: List[str] = []
        for chunk in resp.stream():
            lines.extend(x for x in chunk.decode().splitlines() if x)
            if len([x for x in lines if " line " in x]) >= 3:
                break
        resp.release_conn()
        assert any(x.split(" ", 1)[1] == "line 1" for x in lines)
        assert any(" err " in x for x in lines)  # stderr is part of the log too
        assert lines[0][:4].isdigit() and "T" in lines[0].split(" ")[0]
        tail = api.read_namespaced_pod_log("counter", "app", tail_lines=2)
        assert len(tail.splitlines()) == 2

        api.delete_namespaced_pod("counter", "app", grace_period_seconds=1)
        w = watch.Watch()
        types = [ev["type"] for ev in w.stream(api.list_namespaced_pod, "app",
                                               field_selector="metadata.name=counter",
                                               timeout_seconds=15)
                 if ev["type"] == "DELETED" and not w.stop()]
        assert types == ["DELETED"]
    finally:
        _delete(lab, "app", "counter")


def test_deployment_pods_resolve_through_replicaset_on_two_nodes(lab: Lab) -> None:
    dep = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews, namespace: app}
spec:
  replicas: 3
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: reviews
        image: reviews:v1
        command: ["sh", "-c", "echo reviews on $NODE; exec sleep 600"]
        env:
        - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
"""
    assert lab.kubectl("apply", "-f", "-", input=dep, check=False).returncode == 0
    try:
        def ready() -> Any:
            d = json.loads(lab.kubectl("get", "deploy", "-n", "app", "reviews", "-o",
                                       "json").stdout)
            return d if d.get("status", {}).get("readyReplicas") == 3 else None
        wait_for(ready, 20, 0.2, "3 ready replicas")
        pods = json.loads(lab.kubectl("get", "pods", "-n", "app", "-l", "app=reviews", "-o",
                                      "json").stdout)["items"]
        assert len(pods) == 3
        assert {p["spec"]["nodeName"] for p in pods} == {"lab-node-1", "lab-node-2"}
        rs_name = pods[0]["metadata"]["ownerReferences"][0]["name"]
        assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        rs = json.loads(lab.kubectl("get", "rs", "-n", "app", rs_name, "-o", "json").stdout)
        assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        assert rs["metadata"]["ownerReferences"][0]["name"] == "reviews"
        assert rs_name.startswith("reviews-")
        out = lab.kubectl("logs", "-n", "app", "deploy/reviews").stdout
        assert out.startswith("reviews on lab-node-")
        lab.kubectl("delete", "deploy", "-n", "app", "reviews")
        wait_for(lambda: not json.loads(lab.kubectl(
            "get", "pods", "-n", "app", "-l", "app=reviews", "-o", "json").stdout)["items"],
            15, 0.2, "deployment pods to go")
    finally:
        lab.kubectl("delete", "deploy", "-n", "app", "reviews", "--ignore-not-found",
                    check=False)


def test_exit_codes_restarts_and_deadline(lab: Lab) -> None:
    specs = {
        "exit3": ("exit 3", "  restartPolicy: Never"),
        "done": ("echo bye", "  restartPolicy: Never"),
        "flaky": ("exit 1", "  restartPolicy: OnFailure"),
        "late": ("exec sleep 600", "  activeDeadlineSeconds: 1"),
    }
    for name, (cmd, extra) in specs.items():
        assert _create(lab, _pod_yaml(name, cmd, extra_spec=extra)).returncode == 0
    try:
        p = wait_phase(lab, "app", "exit3", ["Failed"])
        term = p["status"]["containerStatuses"][0]["state"]["terminated"]
        assert term["exitCode"] == 3 and term["reason"] == "Error"
        p = wait_phase(lab, "app", "done", ["Succeeded"])
        assert p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
        assert "Completed" in lab.kubectl("get", "pod", "-n", "app", "done").stdout

        def restarted() -> Any:
            cs = (pod(lab, "app", "flaky") or {}).get("status", {}).get("containerStatuses")
            return cs and cs[0]["restartCount"] >= 1 and cs[0]["lastState"].get("terminated")
        wait_for(restarted, 15, 0.2, "a restart")
        p = pod(lab, "app", "flaky") or {}
        assert p["status"]["phase"] in ("Running", "Pending")
        assert p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1

        p = wait_phase(lab, "app", "late", ["Failed"], timeout=15)
        assert p["status"]["reason"] == "DeadlineExceeded"
        assert "deadline" in p["status"]["message"]
        assert "terminated" in p["status"]["containerStatuses"][0]["state"]
    finally:
        for name in specs:
            _delete(lab, "app", name)


def test_unpullable_image_and_unknown_node(lab: Lab) -> None:
    lab.fail_image_pull(r"^example\.com/broken:")
    bad = _pod_yaml("badimage", "sleep 600").replace("busybox:1.36", "example.com/broken:1")
    lost = _pod_yaml("lost", "sleep 600", extra_spec="  nodeName: lab-node-9")
    assert _create(lab, bad).returncode == 0
    assert _create(lab, lost).returncode == 0
    try:
        def waiting() -> Any:
            cs = (pod(lab, "app", "badimage") or {}).get("status", {}).get("containerStatuses")
            return cs and cs[0]["state"].get("waiting", {}).get("reason") == "ImagePullBackOff"
        wait_for(waiting, 10, 0.2, "ImagePullBackOff")
        p = pod(lab, "app", "badimage") or {}
        assert p["status"]["phase"] == "Pending"
        assert "example.com/broken:1" in p["status"]["containerStatuses"][0]["state"][
            "waiting"]["message"]
        res = lab.kubectl("logs", "-n", "app", "badimage", check=False)
        assert res.returncode != 0
        assert 'is waiting to start: trying and failing to pull image' in res.stderr

        def unschedulable() -> Any:
            conds = (pod(lab, "app", "lost") or {}).get("status", {}).get("conditions") or []
            return [c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"]
        cond = wait_for(unschedulable, 10, 0.2, "PodScheduled=False")[0]
        assert cond["reason"] == "Unschedulable" and "lab-node-9" in cond["message"]
    finally:
        _delete(lab, "app", "badimage")
        _delete(lab, "app", "lost")


def test_host_pid_privileged_pod_sees_host_pids(lab: Lab) -> None:
    host = _pod_yaml(
        "hostpid", "echo mypid=$$$$; ls /proc | grep -c '^[0-9]'; exec sleep 600",
        extra_spec="  hostPID: true\n  nodeName: lab-node-2",
        container_extra="    securityContext: {privileged: true}")
    own = _pod_yaml("ownpid", "echo mypid=$$$$; ls /proc | grep -c '^[0-9]'; exec sleep 600")
    assert _create(lab, host).returncode == 0
    assert _create(lab, own).returncode == 0
    try:
        wait_phase(lab, "app", "hostpid", ["Running"])
        wait_phase(lab, "app", "ownpid", ["Running"])
        def two_lines(name: str) -> Any:
            out = lab.kubectl("logs", "-n", "app", name).stdout
            return out if out.count("\n") >= 2 else None

        host_log: str = wait_for(lambda: two_lines("hostpid"), what="hostpid log")
        own_log: str = wait_for(lambda: two_lines("ownpid"), what="ownpid log")
        info = lab.pod_runtime("app", "hostpid")
        host_pid = info["containers"]["main"]["pid"]
        assert host_log.splitlines()[0] == f"mypid={host_pid}"
        assert int(host_log.splitlines()[1]) > 20  # sees the whole host
        assert own_log.splitlines()[0] == "mypid=1"
        assert int(own_log.splitlines()[1]) <= 3
        assert os.stat(f"/proc/{host_pid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino
        # still its own containerd-named cgroup
        cid = info["containers"]["main"]["id"]
        assert cgroup_v2_path(host_pid).endswith(f"cri-containerd-{cid}.scope")
    finally:
        _delete(lab, "app", "hostpid")
        _delete(lab, "app", "ownpid")


def test_native_sidecar_configmap_volume_and_oom(lab: Lab) -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: sidecar-conf, namespace: app}
data: {greeting: "hello from a configmap"}
---
apiVersion: v1
kind: Pod
metadata: {name: mesh, namespace: app}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: setup
    image: busybox
    command: ["sh", "-c", "echo init done"]
  - name: istio-proxy
    image: proxyv2
    restartPolicy: Always
    command: ["sh", "-c", "cat /etc/conf/greeting; echo; exec sleep 600"]
    volumeMounts: [{name: conf, mountPath: /etc/conf, readOnly: true}]
  containers:
  - name: app
    image: app
    command: ["sh", "-c", "exec sleep 600"]
  volumes:
  - name: conf
    configMap: {name: sidecar-conf}
"""
    assert lab.kubectl("create", "-f", "-", input=text, check=False).returncode == 0
    try:
        p = wait_phase(lab, "app", "mesh", ["Running"])
        inits = {c["name"]: c for c in p["status"]["initContainerStatuses"]}
        assert inits["setup"]["state"]["terminated"]["reason"] == "Completed"
        assert "running" in inits["istio-proxy"]["state"]
        assert inits["istio-proxy"]["containerID"].startswith("containerd://")
        assert "2/2" in lab.kubectl("get", "pod", "-n", "app", "mesh").stdout
        out = lab.kubectl("logs", "-n", "app", "mesh", "-c", "istio-proxy").stdout
        assert out.startswith("hello from a configmap")
        assert not Path("/etc/conf/greeting").exists()  # only inside the pod's mount ns

        assert lab.oom_kill("app", "mesh", "app")

        def oomed() -> Any:
            cs = (pod(lab, "app", "mesh") or {}).get("status", {}).get("containerStatuses")
            last = cs[0]["lastState"].get("terminated") if cs else None
            return last if last and last["reason"] == "OOMKilled" else None
        last = wait_for(oomed, 10, 0.2, "OOMKilled")
        assert last["exitCode"] == 137
    finally:
        lab.kubectl("delete", "-f", "-", "--ignore-not-found", input=text, check=False)


def test_failed_init_container_fails_the_pod(lab: Lab) -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: initfail, namespace: app}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - {name: setup, image: busybox, command: ["sh", "-c", "echo failing; exit 2"]}
  containers:
  - {name: app, image: busybox, command: ["sleep", "600"]}
"""
    lab.kubectl("create", "-f", "-", input=text)
    try:
        p = wait_phase(lab, "app", "initfail", ["Failed"])
        init = p["status"]["initContainerStatuses"][0]
        assert init["state"]["terminated"]["exitCode"] == 2
        main = p["status"]["containerStatuses"][0]
        assert main["state"] == {"waiting": {"reason": "PodInitializing"}}
        assert "Init:Error" in lab.kubectl("get", "pod", "-n", "app", "initfail").stdout
        assert lab.kubectl("logs", "-n", "app", "initfail", "-c", "setup").stdout == "failing\n"
    finally:
        _delete(lab, "app", "initfail")


def test_share_process_namespace_puts_containers_in_one_pidns(lab: Lab) -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: shared, namespace: app}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: x, command: ["sh", "-c", "echo a=$$$$; exec sleep 600"]}
  - {name: b, image: x, command: ["sh", "-c", "echo b=$$$$; exec sleep 600"]}
"""
    lab.kubectl("create", "-f", "-", input=text)
    try:
        wait_phase(lab, "app", "shared", ["Running"])
        info = lab.pod_runtime("app", "shared")
        a, b = info["containers"]["a"]["pid"], info["containers"]["b"]["pid"]
        assert os.stat(f"/proc/{a}/ns/pid").st_ino == os.stat(f"/proc/{b}/ns/pid").st_ino
        assert os.stat(f"/proc/{a}/ns/pid").st_ino == \
            os.stat(f"/proc/{info['sandboxPid']}/ns/pid").st_ino
        assert os.stat(f"/proc/{a}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        # the pause process is PID 1 of the pod, so neither container is
        out_a = wait_for(lambda: lab.kubectl("logs", "-n", "app", "shared", "-c", "a").stdout,
                         what="log a")
        assert out_a.startswith("a=") and out_a.strip() != "a=1"
        assert cgroup_v2_path(info["sandboxPid"]).endswith(".scope")
        assert cgroup_v2_path(info["sandboxPid"]) != cgroup_v2_path(a)
    finally:
        _delete(lab, "app", "shared")


def test_shared_new_mountpoint_survives_the_first_pod(lab: Lab) -> None:
    """Two pods mount a ConfigMap at a path missing on the host: the lab creates it, and
    must not remove it (detaching the other pod's mount) while the other pod runs."""
    mount = "/opt/offwake-lab-test-mp"
    assert not Path(mount).exists()
    docs = ["""
apiVersion: v1
kind: ConfigMap
metadata: {name: mpdata, namespace: app}
data: {k: still-here}
"""]
    for name, node in (("mp-a", "lab-node-1"), ("mp-b", "lab-node-2")):
        docs.append(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: app}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: x
    command: ["sh", "-c", "while true; do cat {mount}/k; echo; sleep 0.2; done"]
    volumeMounts: [{{name: d, mountPath: {mount}}}]
  volumes: [{{name: d, configMap: {{name: mpdata}}}}]
""")
    text = "---".join(docs)
    lab.kubectl("create", "-f", "-", input=text)
    try:
        wait_phase(lab, "app", "mp-a", ["Running"])
        wait_phase(lab, "app", "mp-b", ["Running"])
        assert Path(mount).is_dir()
        _delete(lab, "app", "mp-a")
        time.sleep(0.6)
        tail = lab.kubectl("logs", "-n", "app", "mp-b", "--tail=2").stdout.split()
        assert tail == ["still-here", "still-here"]
        _delete(lab, "app", "mp-b")
        assert not Path(mount).exists()
    finally:
        lab.kubectl("delete", "-f", "-", "--ignore-not-found", input=text, check=False)
