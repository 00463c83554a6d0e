"""The node pod and its ConfigMap: every security-relevant field of docs/design.md §5."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from kubectl_offwake.k8s import podspec
from kubectl_offwake.k8s.podspec import NodePodOptions, collector_configmap, node_pod
from kubectl_offwake.k8s.targets import ResolvedTarget

CID_A = "a" * 64
CID_B = "b" * 64
ZIPAPP = b"PK-zipapp-bytes"
IMAGE = "registry.example/offwake-collector:1"


def _targets():
    return [
        ResolvedTarget("app", "web-1", "uid-1", "node-1", "istio-proxy", CID_A, "containerd"),
        ResolvedTarget("app", "web-2", "uid-2", "node-1", "istio-proxy", CID_B, "cri-o", True),
    ]


@pytest.fixture
def opts():
    return NodePodOptions(run_id="h7ab12cd", node="node-1", image=IMAGE,
                          collector_sha256=hashlib.sha256(ZIPAPP).hexdigest(),
                          duration_s=30, interval_s=2, targets=_targets())


@pytest.fixture
def pod(opts):
    return node_pod(opts)


def _container(pod):
    (container,) = pod["spec"]["containers"]
    return container


def test_pinned_to_the_node_by_node_name_not_a_label(pod):
    assert pod["spec"]["nodeName"] == "node-1"
    assert "nodeSelector" not in pod["spec"]
    assert "affinity" not in pod["spec"]


def test_host_pid_but_no_host_network_or_ipc(pod):
    assert pod["spec"]["hostPID"] is True
    assert pod["spec"]["hostNetwork"] is False
    assert pod["spec"]["hostIPC"] is False


def test_privileged_with_the_reason_written_down(pod):
    sc = _container(pod)["securityContext"]
    assert sc["privileged"] is True
    assert sc["readOnlyRootFilesystem"] is True
    note = pod["metadata"]["annotations"][podspec.SECURITY_ANNOTATION]
    assert note.startswith("privileged:")
    for reason in ("bpf()", "perf_event_open", "seccomp", "CAP_SYS_ADMIN"):
        assert reason in note


def test_host_mounts_are_read_only_and_exactly_the_needed_ones(pod):
    container = _container(pod)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert host_paths == {"/sys/kernel/debug", "/sys/kernel/tracing", "/lib/modules",
                          "/usr/src", "/sys/fs/cgroup"}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            assert mount["readOnly"] is True, mount
            assert mount["mountPath"] == volume["hostPath"]["path"]
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert "emptyDir" in volumes[writable[0]["name"]]


def test_no_service_account_token_and_no_sidecar(pod):
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"


def test_tolerates_every_taint(pod):
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_deadline_a_little_past_the_duration(opts):
    for duration in (5, 30, 120.5):
        opts.duration_s = duration
        deadline = node_pod(opts)["spec"]["activeDeadlineSeconds"]
        assert duration < deadline <= duration + 120
        assert isinstance(deadline, int)


def test_labels_managed_by_and_run_id(pod):
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kubectl-offwake"
    assert labels[podspec.RUN_KEY] == "h7ab12cd"


def test_modest_requests_and_limits(pod):
    resources = _container(pod)["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_never_restarted_and_graceful_stop(pod):
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 10


def test_command_checks_the_zipapp_hash_then_runs_it_with_every_target_of_the_node(pod):
    command = _container(pod)["command"]
    assert command[:5] == ["python3", "-I", "-u", "-c", podspec.VERIFY]
    assert command[5:7] == [hashlib.sha256(ZIPAPP).hexdigest(), "/opt/offwake/collector.pyz"]
    ids = [command[i + 1] for i, arg in enumerate(command) if arg == "--container-id"]
    assert ids == [f"containerd://{CID_A}", f"cri-o://{CID_B}"]
    assert command[command.index("--duration") + 1] == "30"
    assert command[command.index("--interval") + 1] == "2"
    assert command[command.index("--node-name") + 1] == "node-1"
    assert "args" not in _container(pod)


def test_the_users_map_sizes_reach_every_nodes_collector(opts):
    """``kubectl offwake TARGET --agg-size N`` (what the loss finding advises) is passed to
    the collector as it is; the collector's own parser accepts the result."""
    from dataclasses import replace

    from kubectl_offwake.collector.cli import parse_args

    command = podspec.collector_command(replace(opts, collector_args=["--agg-size", "32768"]))
    assert command[-2:] == ["--agg-size", "32768"]
    assert parse_args(command[7:]).map_sizes()["--agg-size"] == 32768


def test_the_image_is_the_chosen_one_and_the_interpreter_the_images(opts):
    container = _container(node_pod(opts))
    assert container["image"] == IMAGE
    assert container["command"][0] == podspec.PYTHON == "python3"


def test_zipapp_configmap_is_immutable_and_mounted_read_only(opts, pod):
    cm = collector_configmap(opts, ZIPAPP)
    assert cm["immutable"] is True
    assert cm["metadata"]["name"] == pod["metadata"]["name"]
    assert cm["metadata"]["namespace"] == pod["metadata"]["namespace"] == "offwake-system"
    assert cm["metadata"]["labels"] == pod["metadata"]["labels"]
    assert base64.b64decode(cm["binaryData"]["collector.pyz"]) == ZIPAPP
    volume = next(v for v in pod["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    mount = next(m for m in _container(pod)["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": "/opt/offwake", "readOnly": True}


def test_owner_reference_points_at_the_pod():
    ref = podspec.owner_reference({"metadata": {"name": "p", "uid": "u-1"}})
    assert ref["kind"] == "Pod" and ref["name"] == "p" and ref["uid"] == "u-1"


def test_names_are_valid_dns_labels():
    name = podspec.object_name("h7ab12cd", "ip-10-0-0-1.EU-WEST-1.compute.internal_x" * 3)
    assert len(name) <= 63
    assert name.startswith("offwake-h7ab12cd-")
    assert all(c.isalnum() or c == "-" for c in name) and name == name.lower()
    assert not name.endswith("-")


def test_configmap_and_pod_must_agree_on_the_hash(opts):
    with pytest.raises(ValueError):
        collector_configmap(opts, b"other bytes")
    opts.collector_sha256 = "not-a-hash"
    with pytest.raises(ValueError):
        node_pod(opts)


def test_cleanup_selects_collector_objects_only(pod):
    selector = dict(term.split("=") for term in podspec.COLLECTOR_SELECTOR.split(","))
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/name"] == "offwake-collector"


def test_dry_run_yaml_round_trips_and_carries_the_security_comment(opts):
    objects = [node_pod(opts), collector_configmap(opts, ZIPAPP)]
    text = podspec.manifests_yaml(objects)
    assert "# privileged: BCC needs bpf()" in text
    assert "# Immutable; the pod runs it only if its sha256" in text
    assert "- |\n" in text  # the hash check reads as the code it is
    docs = list(yaml.safe_load_all(text))
    assert docs == objects


# -- the hash check, run by a real interpreter on real files ---------------------------------


def _zipapp(tmp_path: Path, marker: str) -> bytes:
    """A tiny zipapp that prints its arguments and a marker, then exits 7."""
    path = tmp_path / f"{marker}.pyz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__main__.py", f"import sys\nprint({marker!r}, sys.argv[1:])\nsys.exit(7)\n")
    return path.read_bytes()


def _verify(tmp_path: Path, sha: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    command = [sys.executable, *podspec.collector_command(NodePodOptions(
        "r1", "node-1", IMAGE, sha))[1:5], sha, str(path), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)


def test_hash_check_runs_exactly_the_bytes_it_hashed(tmp_path):
    data = _zipapp(tmp_path, "sent")
    target = tmp_path / "collector.pyz"
    target.write_bytes(data)
    done = _verify(tmp_path, hashlib.sha256(data).hexdigest(), target, "--duration", "5")
    assert done.returncode == 7, done.stderr
    assert done.stdout.strip() == "sent ['--duration', '5']"


def test_hash_check_refuses_other_bytes_with_one_line(tmp_path):
    sent = _zipapp(tmp_path, "sent")
    target = tmp_path / "collector.pyz"
    target.write_bytes(_zipapp(tmp_path, "swapped"))
    done = _verify(tmp_path, hashlib.sha256(sent).hexdigest(), target)
    assert done.returncode == 1
    assert done.stdout == ""  # nothing of the swapped zipapp ran
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"{podspec.REFUSAL} {target} has sha256 ")
    assert hashlib.sha256(sent).hexdigest() in line


def test_hash_check_of_a_missing_file_is_one_line(tmp_path):
    done = _verify(tmp_path, "0" * 64, tmp_path / "nothing.pyz")
    assert done.returncode == 1
    assert done.stderr.strip() == f"{podspec.REFUSAL} cannot read {tmp_path}/nothing.pyz: " \
                                  "No such file or directory"
