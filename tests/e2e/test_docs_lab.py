"""The documented commands that talk to a cluster, run against the lab as written.

Every ``lab`` command of README.md and docs/ (tests/docs/docrules.py) runs through the real
``kubectl`` against the session's lab, with ``<registry>`` its registry: the image is built
and pushed, the cluster's image chosen with ``setup --image``, the traces run against pods
made as the docs name them (pod ``app/productpage-v1-6b7f`` and deployment
``app/productpage``, each with an ``istio-proxy`` container running Envoy), then
``cleanup`` and ``version``. Pasted output (``kubectl offwake version``) is compared, and
rewritten with ``OFFWAKE_UPDATE_DOCS=1``. Afterwards the cluster's image is the session's
again and nothing of a run is left.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
from docs.docrules import (
    PLACEHOLDERS,
    Part,
    assert_ran,
    check_outputs,
    console_parts,
    fixture_workdir,
    parts_of,
    plugin_env,
    run_part,
)

from .conftest import (
    apply,
    assert_clean,
    envoy_pod,
    get_json,
    registry_of,
    wait_envoy_ready,
)

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

NAMESPACE = "app"
POD = "productpage-v1-6b7f"
DEPLOYMENT = "productpage"

#: The order the commands run in, whatever document shows them: images before the setup
#: that selects one, traces, then cleanup and what `version` says afterwards.
STAGES = (r"image/build ", r"kubectl offwake setup ", r"kubectl offwake (?!cleanup|version)",
          r"kubectl offwake cleanup", r"kubectl offwake version")


def stage(part: Part) -> int:
    for n, pattern in enumerate(STAGES):
        if re.match(pattern, part.text):
            return n
    return len(STAGES)


def deployment(name: str) -> List[dict]:
    """The Envoy pod of the e2e tests as a Deployment's template (and its ConfigMap)."""
    config, pod = envoy_pod(name, NAMESPACE, labels={"app": name})
    return [config, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]}},
    }]


@pytest.fixture
def workloads(lab):
    apply(lab, envoy_pod(POD, NAMESPACE) + deployment(DEPLOYMENT))
    wait_envoy_ready(lab, NAMESPACE, POD)
    pods: List[dict] = []
    deadline = time.monotonic() + 60
    while not pods and time.monotonic() < deadline:
        pods = get_json(lab, "pods", "-n", NAMESPACE, "-l", f"app={DEPLOYMENT}")["items"]
        time.sleep(0.3)
    assert pods, f"deployment {NAMESPACE}/{DEPLOYMENT} made no pod"
    wait_envoy_ready(lab, NAMESPACE, pods[0]["metadata"]["name"])
    yield
    lab.kubectl("delete", "deployment", "-n", NAMESPACE, DEPLOYMENT, "--wait=true", check=False)
    lab.kubectl("delete", "pod", "-n", NAMESPACE, POD, "--wait=true", check=False)
    lab.kubectl("delete", "configmap", "-n", NAMESPACE, f"{POD}-envoy", f"{DEPLOYMENT}-envoy",
                check=False)


def test_documented_cluster_commands(lab, workloads, tmp_path: Path) -> None:
    parts = sorted(parts_of("lab"), key=stage)  # sorted() is stable: document order within
    assert parts, "no documented command runs against a cluster"
    values: Dict[str, str] = {**PLACEHOLDERS, "<registry>": registry_of(lab)}
    env = plugin_env({"KUBECONFIG": str(lab.kubeconfig)})  # the cluster's choice decides
    workdir = fixture_workdir(tmp_path)  # relative paths are the repository's
    runs = []
    try:
        for part in parts:
            ran = run_part(part, workdir, values, env=env, timeout=1800)
            assert_ran(ran)
            out = re.search(r"--out (\S+)", ran.command)
            if out:
                assert (workdir / out.group(1)).stat().st_size > 0, ran.command
            runs.append(ran)
        for part in console_parts("lab"):
            if part not in parts:  # the same command pasted again elsewhere: run it again
                ran = run_part(part, workdir, values, env=env, timeout=600)
                assert_ran(ran)
                runs.append(ran)
        check_outputs(runs, values)
    finally:
        done = subprocess.run(["kubectl", "offwake", "setup", "--image", lab.image], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert_clean(lab)
