"""The collector image end to end: built by image/build, pushed to the lab's registry, chosen
with `kubectl offwake setup --image`, pulled and run from its own root filesystem; `version`
names it; an image that does not exist and a collector that cannot load its program are
failed runs naming the node and the reason; nothing is left in offwake-system.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kubectl_offwake import __version__

from .conftest import (
    COLLECTOR_NS,
    assert_clean,
    collector_namespace_contents,
    collector_processes,
    envoy_target,
    pod_name_in,
    push_with_file,
    read_until,
    registry_of,
)

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

NS = "h7img"
POD = "envoy-i1"
NODE = "lab-node-1"
CLUSTER_CHOICE = ("the cluster's choice: ConfigMap offwake-system/offwake-config, set by "
                  "`kubectl offwake setup --image`")


@pytest.fixture(scope="module")
def target(cluster):
    return envoy_target(cluster, NS, POD, NODE)


def _kubectl_offwake(lab, *args: str, env=None) -> subprocess.CompletedProcess:
    """Through kubectl's plugin discovery, as a user types it."""
    return subprocess.run(["kubectl", "offwake", *args], env={**lab.env(), **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_version_names_the_clusters_image(cluster, tmp_path):
    done = _kubectl_offwake(cluster, "version", env={"OFFWAKE_IMAGE": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"kubectl-offwake {__version__}",
        f"collector image: {cluster.image} ({CLUSTER_CHOICE})"]
    env = _kubectl_offwake(cluster, "version", env={"OFFWAKE_IMAGE": "reg.example/x:1"})
    assert env.stdout.splitlines()[1] == "collector image: reg.example/x:1 (from $OFFWAKE_IMAGE)"
    # a cluster that cannot be reached: the version still, then one line, exit 1
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for item in config["clusters"]:
        item["cluster"]["server"] = "https://127.0.0.1:9"
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(yaml.safe_dump(config))
    down = _kubectl_offwake(cluster, "version", "--kubeconfig", str(unreachable),
                            env={"OFFWAKE_IMAGE": ""})
    assert down.returncode == 1
    assert down.stdout == f"kubectl-offwake {__version__}\n"
    (line,) = down.stderr.splitlines()
    assert line.startswith("error: the collector image is unknown: cannot read the cluster's "
                           "choice (cannot reach the API server at https://127.0.0.1:9")


def test_the_collector_runs_in_the_images_root_filesystem(target, plugin):
    proc = plugin.start(POD, "-n", NS, "--duration", "8s", "-o", "json")
    try:
        seen = read_until(proc, "collector tracing", 120)
        runtime = target.pod_runtime(COLLECTOR_NS, pod_name_in(seen))
        root = Path(f"/proc/{runtime['containers']['collector']['pid']}/root")
        root_id = (os.stat(root).st_dev, os.stat(root).st_ino)
        has_bcc = bool(list(root.glob("usr/lib/python3/dist-packages/bcc/__init__.py")))
    finally:
        out, err = proc.communicate(timeout=120)  # let the run end and clean up either way
    assert proc.returncode == 0, seen + err
    assert f"collector image: {target.image} ({CLUSTER_CHOICE})" in seen
    host = os.stat("/")
    assert root_id != (host.st_dev, host.st_ino), "the collector runs on the host's filesystem"
    assert has_bcc, "the collector's root filesystem is not the image's (no BCC in it)"
    report = json.loads(out)
    assert report["source"]["complete"] is True
    assert {w["target"]["pod"] for w in report["wakeups"]} == {f"{NS}/{POD}"}
    assert_clean(target)


def test_an_image_that_does_not_exist_fails_naming_it(target, plugin):
    ref = f"{registry_of(target)}/offwake-collector:no-such-tag"
    done = plugin.run(POD, "-n", NS, "--image", ref, "--duration", "5s")
    assert done.returncode == 1, done.stderr
    assert f"error: node {NODE} cannot pull the collector image {ref} (" in done.stderr
    assert "ErrImagePull" in done.stderr or "ImagePullBackOff" in done.stderr
    assert "`image/build --push REF`" in done.stderr
    assert "`kubectl offwake setup --image REF`" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert_clean(target)


def test_a_collector_that_cannot_load_its_program_fails_naming_node_and_reason(target, plugin):
    """The image built, plus one layer that makes `import bcc` fail (a .pth line run at
    start-up): the collector starts, cannot load its BPF program and says why."""
    ref = push_with_file(registry_of(target), "e2e", "no-bcc",
                         "/usr/lib/python3/dist-packages/zz-offwake-no-bcc.pth",
                         b"import sys; sys.modules['bcc'] = None\n")
    done = plugin.run(POD, "-n", NS, "--image", ref, "--duration", "5s", "-o", "json")
    assert done.returncode == 1, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: the collector on node {NODE} failed: ")
    assert "cannot import bcc" in error
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # nothing was traced: no report that could read as all clear
    assert_clean(target)


def test_nothing_is_left_in_offwake_system(target):
    """After every run above: only the cluster's image choice stays."""
    left = [name for name in collector_namespace_contents(target)
            if name != "configmaps/kube-root-ca.crt"]  # the API server's own, if it makes one
    assert left == ["configmaps/offwake-config"]
    assert collector_processes(target) == []
