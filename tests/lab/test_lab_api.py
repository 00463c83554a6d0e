"""The lab's API server: discovery, errors as Status, RBAC, Pod Security, switches, up/down."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lab.cluster import Lab
from lab.helpers import comm, get_json, pid_alive, wait_for, wait_phase
from lab.testimage import build_image, busybox_layer, push

pytestmark = [pytest.mark.lab, pytest.mark.root]

LAB_DIR = Path(__file__).resolve().parent


def _sleeper(name: str, ns: str = "app", extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
{extra}
  containers:
  - name: c
    image: busybox
    command: ["sleep", "600"]
"""


def _listener_pid(port: int) -> int:
    """The PID of the process listening on 127.0.0.1:port (from `ss`)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split("pid=", 1)[1].split(",", 1)[0])


def test_discovery_and_validation_need_no_flags(lab: Lab) -> None:
    res = lab.kubectl("api-resources", "-o", "name")
    names = res.stdout.split()
    for r in ("pods", "configmaps", "namespaces", "nodes", "deployments.apps",
              "replicasets.apps", "selfsubjectaccessreviews.authorization.k8s.io"):
        assert r in names
    nodes = lab.kubectl("get", "nodes", "-o", "wide").stdout
    assert "lab-node-1" in nodes and "lab-node-2" in nodes and "containerd://" in nodes
    # kubectl validates through the server (OpenAPI v3 says fieldValidation is supported)
    res = lab.kubectl("create", "-f", "-", "-v=6", input=_sleeper("validated"), check=False)
    try:
        assert res.returncode == 0, res.stderr
        assert "fieldValidation=Strict" in res.stderr
        assert "openapi/v2" not in res.stderr
    finally:
        lab.kubectl("delete", "pod", "-n", "app", "validated", "--ignore-not-found")


def test_errors_are_status_objects(lab: Lab) -> None:
    res = lab.kubectl("get", "pod", "-n", "app", "nope", check=False)
    assert res.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in res.stderr

    assert lab.kubectl("create", "-f", "-", input=_sleeper("twice"), check=False).returncode == 0
    try:
        res = lab.kubectl("create", "-f", "-", input=_sleeper("twice"), check=False)
        assert 'Error from server (AlreadyExists)' in res.stderr
        assert 'pods "twice" already exists' in res.stderr
    finally:
        lab.kubectl("delete", "pod", "-n", "app", "twice", "--ignore-not-found")

    invalid = _sleeper("noimage").replace("    image: busybox\n", "")
    res = lab.kubectl("create", "-f", "-", input=invalid, check=False)
    assert 'The Pod "noimage" is invalid: spec.containers[0].image: Required value' in res.stderr

    res = lab.kubectl("create", "-f", "-", input=_sleeper("lost", ns="missing-ns"), check=False)
    assert 'namespaces "missing-ns" not found' in res.stderr

    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api: Any = client.CoreV1Api(config.new_client_from_config(str(lab.kubeconfig)))
    with pytest.raises(ApiException) as err:
        api.read_namespaced_pod("nope", "app")
    status = json.loads(str(err.value.body))
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["code"] == 404 and status["details"] == {"name": "nope", "kind": "pods"}


def test_rbac_forbidden_wording_and_access_reviews(lab: Lab) -> None:
    res = lab.kubectl("create", "-f", "-", input=_sleeper("devpod"), context="lab-dev",
                      check=False)
    assert res.returncode == 1
    assert ('pods is forbidden: User "dev" cannot create resource "pods" in API group "" in '
            'the namespace "app"') in res.stderr
    assert lab.kubectl("auth", "can-i", "list", "pods", "-n", "app", context="lab-dev",
                       check=False).stdout.strip() == "yes"
    assert lab.kubectl("auth", "can-i", "create", "pods", "-n", "app", context="lab-dev",
                       check=False).stdout.strip() == "no"

    from kubernetes import client, config

    def review(ctx: str, verb: str, resource: str, ns: str = "app", sub: str = "") -> bool:
        api: Any = client.AuthorizationV1Api(config.new_client_from_config(str(lab.kubeconfig),
                                                                      context=ctx))
        attrs = client.V1ResourceAttributes(namespace=ns, verb=verb, resource=resource,
                                            subresource=sub or None)
        body = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
        return bool(api.create_self_subject_access_review(body).status.allowed)

    assert review("lab", "create", "pods")
    assert review("lab-dev", "get", "pods", sub="log")
    assert not review("lab-dev", "delete", "pods")
    lab.deny("create", "configmaps", namespace="offwake-system")
    assert not review("lab", "create", "configmaps", ns="offwake-system")
    assert review("lab", "create", "configmaps", ns="app")
    lab.set_rules("dev", [{"verbs": ["create", "delete"], "apiGroups": [""],
                           "resources": ["pods"], "namespaces": ["app"]}])
    try:
        assert review("lab-dev", "create", "pods")
        assert not review("lab-dev", "create", "pods", ns="default")
    finally:
        from lab.daemon import DEV_RULES
        lab.set_rules("dev", DEV_RULES)
    lab.clear_denials()
    assert review("lab", "create", "configmaps", ns="offwake-system")


def test_pod_security_baseline_rejects_privileged_host_pid(lab: Lab) -> None:
    ns = """
apiVersion: v1
kind: Namespace
metadata:
  name: strict-apps
  labels: {pod-security.kubernetes.io/enforce: baseline}
"""
    assert lab.kubectl("create", "-f", "-", input=ns, check=False).returncode == 0
    try:
        pod = _sleeper("collector", ns="strict-apps", extra="  hostPID: true").replace(
            "    command:", "    securityContext: {privileged: true}\n    command:")
        res = lab.kubectl("create", "-f", "-", input=pod, check=False)
        assert res.returncode == 1
        assert ('Error from server (Forbidden): error when creating "STDIN": pods "collector" is '
                'forbidden: violates PodSecurity "baseline:latest": host namespaces '
                '(hostPID=true), privileged (container "c" must not set '
                'securityContext.privileged=true)') in res.stderr
        # a plain pod passes baseline
        res = lab.kubectl("create", "-f", "-", input=_sleeper("plain", ns="strict-apps"),
                          check=False)
        assert res.returncode == 0, res.stderr
    finally:
        lab.kubectl("delete", "namespace", "strict-apps", "--wait=true", timeout=60)
    assert lab.kubectl("get", "ns", "strict-apps", check=False).returncode == 1


def test_admission_rejection_switch(lab: Lab) -> None:
    lab.reject("pods", "collector pods are not allowed here", namespace="app",
               name="^collector-")
    res = lab.kubectl("create", "-f", "-", input=_sleeper("collector-x"), check=False)
    assert 'admission webhook "lab.offwake.test" denied the request: collector pods are ' \
           'not allowed here' in res.stderr
    lab.reset()
    res = lab.kubectl("create", "-f", "-", input=_sleeper("collector-x"), check=False)
    assert res.returncode == 0
    lab.kubectl("delete", "pod", "-n", "app", "collector-x", "--wait=false")


def test_configmap_owned_by_pod_is_collected_with_it(lab: Lab) -> None:
    lab.kubectl("create", "-f", "-", input=_sleeper("owner"))
    uid = json.loads(lab.kubectl("get", "pod", "-n", "app", "owner", "-o",
                                 "json").stdout)["metadata"]["uid"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "owned", "namespace": "app", "ownerReferences": [
              {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": uid}]},
          "data": {"k": "v"}}
    lab.kubectl("create", "-f", "-", input=json.dumps(cm))
    assert lab.kubectl("get", "cm", "-n", "app", "owned", check=False).returncode == 0
    lab.kubectl("delete", "pod", "-n", "app", "owner")
    wait_for(lambda: lab.kubectl("get", "cm", "-n", "app", "owned", check=False).returncode == 1,
             10, 0.2, "the owned ConfigMap to be garbage-collected")


def test_cut_log_stream(lab: Lab) -> None:
    pod = _sleeper("chatty").replace('["sleep", "600"]',
                                     '["sh", "-c", "while true; do echo tick; sleep 0.1; done"]')
    lab.kubectl("create", "-f", "-", input=pod)
    try:
        wait_phase(lab, "app", "chatty", ["Running"])
        proc = subprocess.Popen(["kubectl", "--kubeconfig", str(lab.kubeconfig), "logs", "-f",
                                 "-n", "app", "chatty"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "tick\n"
        timer = threading.Timer(0.5, lambda: lab.cut_logs("app", "chatty"))
        timer.start()
        proc.communicate(timeout=15)  # (a stream left open times out here)
        timer.join()
        # the stream ended although the container still runs
        p = json.loads(lab.kubectl("get", "pod", "-n", "app", "chatty", "-o", "json").stdout)
        assert p["status"]["phase"] == "Running"
    finally:
        lab.kubectl("delete", "pod", "-n", "app", "chatty", "--ignore-not-found")


def test_watch_too_old_resource_version_is_gone(lab: Lab) -> None:
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException

    api: Any = client.CoreV1Api(config.new_client_from_config(str(lab.kubeconfig)))
    w = watch.Watch()
    with pytest.raises(ApiException) as err:
        for _ in w.stream(api.list_namespaced_pod, "app", resource_version="1",
                          timeout_seconds=2):
            pass
    assert err.value.status == 410
    # a current resourceVersion is fine and replays nothing old
    rv = api.list_namespaced_pod("app").metadata.resource_version
    events = list(watch.Watch().stream(api.list_namespaced_pod, "app", resource_version=rv,
                                       timeout_seconds=1))
    assert events == []


def test_up_and_down_scripts_leave_nothing_behind(tmp_path: Path) -> None:
    prefix = "h6updown"
    env_python = sys.executable
    up = subprocess.run([env_python, str(LAB_DIR / "up"), "--prefix", prefix,
                         "--nodes", "lab-node-1,lab-node-2:crio"],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    kubeconfig = up.stdout.strip()
    assert kubeconfig == f"/tmp/{prefix}/kubeconfig"
    lab = Lab.attach(f"/tmp/{prefix}")
    registry_file = Path(f"/tmp/{prefix}/registry")
    assert registry_file.read_text().strip() == lab.registry
    assert lab.registry.startswith("127.0.0.1:")
    with urllib.request.urlopen(f"http://{lab.registry}/v2/", timeout=5) as resp:
        assert resp.status == 200  # the registry API v2 answers
    registry_pid = _listener_pid(int(lab.registry.rsplit(":", 1)[1]))
    assert comm(registry_pid) == "docker-registry"
    state = Path(f"/tmp/{prefix}")
    try:
        # p2 runs a pulled image: its overlay, writable layer and the unpacked image go too
        image = f"{lab.registry}/lab-test/updown:1"
        push(build_image(tmp_path / "image", [busybox_layer()], {}), image)
        lab.kubectl("create", "-f", "-", input=_sleeper("p1"))
        lab.kubectl("create", "-f", "-", input=_sleeper("p2", extra="  nodeName: lab-node-2")
                    .replace("image: busybox", f"image: {image}"))
        wait_phase(lab, "app", "p1", ["Running"])
        wait_phase(lab, "app", "p2", ["Running"])
        pids = [lab.pod_runtime("app", p)["containers"]["c"]["pid"] for p in ("p1", "p2")]
        # lab-node-2 runs CRI-O: its naming differs from containerd's
        p2 = json.loads(lab.kubectl("get", "pod", "-n", "app", "p2", "-o", "json").stdout)
        cid = p2["status"]["containerStatuses"][0]["containerID"]
        assert cid.startswith("cri-o://")
        cg = Path(f"/proc/{pids[1]}/cgroup").read_text()
        assert f"/crio-{cid.split('//')[1]}.scope" in cg
        assert "cri-containerd-" in Path(f"/proc/{pids[0]}/cgroup").read_text()
        nodes = lab.kubectl("get", "nodes", "-o", "wide").stdout
        assert "cri-o://" in nodes and "containerd://" in nodes
        netns = [lab.pod_runtime("app", p)["netns"] for p in ("p1", "p2")]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        assert lab.pod_runtime("app", "p2")["containers"]["c"]["filesystem"] == "image"
        assert (state / "images").is_dir() and (state / "pods").is_dir()
        assert lab.leftovers()
    finally:
        down = subprocess.run([env_python, str(LAB_DIR / "down"), "--prefix", prefix],
                              capture_output=True, text=True, timeout=90)
    assert down.returncode == 0, down.stderr
    assert lab.leftovers() == []
    assert not registry_file.exists()
    assert not pid_alive(registry_pid)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in netns)
    assert wait_for(lambda: not Lab(prefix=prefix).running(), 5, 0.1, "lab stopped")
    assert not (state / "images").exists() and not (state / "pods").exists()
    assert str(state) not in Path("/proc/self/mountinfo").read_text()
    shutil.rmtree(state)  # logs and what was pushed to the registry


def test_paused_node_holds_pods_pending_and_events_are_recorded(lab: Lab) -> None:
    lab.pause_node("lab-node-1")
    lab.kubectl("create", "-f", "-", input=_sleeper("held", extra="  nodeName: lab-node-1"))
    try:
        def creating() -> Any:
            p = json.loads(lab.kubectl("get", "pod", "-n", "app", "held", "-o", "json").stdout)
            cs = p.get("status", {}).get("containerStatuses") or []
            return p if cs and cs[0]["state"].get("waiting", {}).get("reason") == \
                "ContainerCreating" else None
        p = wait_for(creating, 10, 0.1, "ContainerCreating")
        assert p["status"]["phase"] == "Pending"
        time.sleep(0.5)
        assert "ContainerCreating" in lab.kubectl("get", "pod", "-n", "app", "held").stdout
        lab.pause_node("lab-node-1", paused=False)
        wait_phase(lab, "app", "held", ["Running"])
        events = wait_for(lambda: (lambda out: out if "Started container c" in out else None)(
            lab.kubectl("get", "events", "-n", "app",
                        "--field-selector", "involvedObject.name=held").stdout),
            5, 0.2, "the Started event")
        assert "Successfully assigned app/held to lab-node-1" not in events  # nodeName given
        assert "pod/held" in events
    finally:
        lab.kubectl("delete", "pod", "-n", "app", "held", "--ignore-not-found")


def test_kubectl_create_and_run_send_protobuf(lab: Lab) -> None:
    """What people type by hand (create namespace/configmap/secret, debug node) is protobuf."""
    ns = "pbtest"
    res = lab.kubectl("create", "namespace", ns, "-v=8", check=False)
    assert res.returncode == 0, res.stderr
    assert "Content-Type: application/vnd.kubernetes.protobuf" in res.stderr
    try:
        got = json.loads(lab.kubectl("get", "namespace", ns, "-o", "json").stdout)
        assert got["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns
        assert got["spec"]["finalizers"] == ["kubernetes"]

        res = lab.kubectl("create", "configmap", "cm", "-n", ns, "--from-literal=a=1",
                          "--from-literal=b=two words", "-v=8", check=False)
        assert res.returncode == 0, res.stderr
        assert "Content-Type: application/vnd.kubernetes.protobuf" in res.stderr
        cm = json.loads(lab.kubectl("get", "configmap", "cm", "-n", ns, "-o", "json").stdout)
        assert cm["data"] == {"a": "1", "b": "two words"}

        res = lab.kubectl("create", "secret", "generic", "s", "-n", ns, "--from-literal=pw=s3cr3t",
                          "-v=8", check=False)
        assert res.returncode == 0, res.stderr
        assert "Content-Type: application/vnd.kubernetes.protobuf" in res.stderr
        sec = json.loads(lab.kubectl("get", "secret", "s", "-n", ns, "-o", "json").stdout)
        assert base64.b64decode(sec["data"]["pw"]) == b"s3cr3t" and sec["type"] == "Opaque"

        # kubectl 1.32's `run` sends JSON; `debug node/...` sends the Pod as protobuf
        res = lab.kubectl("run", "r", "-n", ns, "--image=busybox:1.36", "--restart=Never",
                          "--env=GREETING=hello", "--labels=team=a", "--port=8080", "--command",
                          "--", "sh", "-c", "echo $GREETING; exec sleep 600", check=False)
        assert res.returncode == 0, res.stderr
        p = wait_phase(lab, ns, "r", ["Running"])
        c = p["spec"]["containers"][0]
        assert c["command"] == ["sh", "-c", "echo $GREETING; exec sleep 600"]
        assert c["env"] == [{"name": "GREETING", "value": "hello"}]
        assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
        assert p["metadata"]["labels"] == {"team": "a"}
        assert p["spec"]["restartPolicy"] == "Never"
        res = lab.kubectl("debug", "node/lab-node-2", "-n", ns, "--image=busybox:1.36",
                          "--profile=sysadmin", "-v=8", "--", "sleep", "600", check=False)
        assert res.returncode == 0, res.stderr
        assert "Content-Type: application/vnd.kubernetes.protobuf" in res.stderr
        debug = next(x for x in get_json(lab, "pods", "-n", ns)["items"]
                     if x["metadata"]["name"].startswith("node-debugger-lab-node-2-"))
        spec = debug["spec"]
        assert (spec["hostPID"], spec["hostNetwork"], spec["hostIPC"]) == (True, True, True)
        assert spec["nodeName"] == "lab-node-2" and spec["restartPolicy"] == "Never"
        assert spec["volumes"] == [{"name": "host-root", "hostPath": {"path": "/"}}]
        assert spec["containers"][0]["securityContext"] == {"privileged": True}
        assert spec["containers"][0]["volumeMounts"] == [{"name": "host-root",
                                                          "mountPath": "/host"}]
        assert spec["containers"][0]["command"] == ["sleep", "600"]
        wait_for(lambda: "hello" in lab.kubectl("logs", "-n", ns, "r").stdout, what="log")
    finally:
        lab.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_pods_and_configmaps_are_checked_against_the_api_schemas(lab: Lab) -> None:
    """Unknown fields and wrong types fail decoding (400), missing fields are 422 Invalid."""
    unknown = _sleeper("unknownfield").replace("    command:", "    bogus: 1\n    command:")
    bad_type = _sleeper("badtype").replace("terminationGracePeriodSeconds: 1",
                                           "terminationGracePeriodSeconds: soon")
    missing = _sleeper("nomountpath").replace(
        "    command:", "    volumeMounts: [{name: v}]\n    command:") + \
        "  volumes: [{name: v, emptyDir: {}}]\n"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: badcm, namespace: app}\n" \
         "data: {n: 1}\n"
    decode = 'Error from server (BadRequest): error when creating "STDIN": '
    for text, error in (
        (unknown, decode + 'Pod in version "v1" cannot be handled as a Pod: strict decoding '
                           'error: unknown field "spec.containers[0].bogus"'),
        (bad_type, decode + 'Pod in version "v1" cannot be handled as a Pod: json: cannot '
                            'unmarshal string into Go struct field '
                            'PodSpec.spec.terminationGracePeriodSeconds of type int64'),
        (missing, 'The Pod "nomountpath" is invalid: '
                  'spec.containers[0].volumeMounts[0].mountPath: Required value'),
        (cm, decode + 'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: '
                      'cannot unmarshal number into Go struct field ConfigMap.data of type '
                      'string'),
    ):
        res = lab.kubectl("create", "-f", "-", input=text, check=False)
        assert (res.returncode, res.stderr.strip()) == (1, error)
    for name in ("unknownfield", "badtype", "nomountpath"):
        assert lab.kubectl("get", "pod", "-n", "app", name, check=False).returncode == 1
    assert lab.kubectl("get", "configmap", "-n", "app", "badcm", check=False).returncode == 1

    # --validate=warn: the API server drops the field and says so in a Warning header
    res = lab.kubectl("create", "-f", "-", "--validate=warn", input=unknown, check=False)
    try:
        assert res.returncode == 0, res.stderr
        assert 'Warning: unknown field "spec.containers[0].bogus"' in res.stderr
        created = json.loads(lab.kubectl("get", "pod", "-n", "app", "unknownfield",
                                         "-o", "json").stdout)
        assert "bogus" not in created["spec"]["containers"][0]
        # a patch whose result is invalid is refused as well
        res = lab.kubectl("patch", "pod", "-n", "app", "unknownfield", "--type=merge",
                          "-p", '{"spec": {"activeDeadlineSeconds": "x"}}', check=False)
        assert res.returncode == 1
        assert "cannot unmarshal string into Go struct field " \
               "PodSpec.spec.activeDeadlineSeconds of type int64" in res.stderr
    finally:
        lab.kubectl("delete", "pod", "-n", "app", "unknownfield", "--ignore-not-found")
