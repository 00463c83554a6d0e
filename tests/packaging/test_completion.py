"""``kubectl offwake <TAB>`` as kubectl >= 1.26 does it: ``kubectl __complete offwake WORDS``
runs the installed ``kubectl_complete-offwake``; against the lab for namespaces, pods and
contexts, and against no cluster at all, where it must still answer, quietly.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest
import yaml

from kubectl_offwake.cli.options import Format

pytestmark = [pytest.mark.slow]

COMMANDS = ["report", "local", "demo", "setup", "cleanup", "version"]


def complete(installed, kubeconfig: Path, *words: str) -> Tuple[List[str], str]:
    done = subprocess.run(["kubectl", "__complete", "offwake", *words], capture_output=True,
                          text=True, env=installed.env(kubeconfig), timeout=60)
    assert done.returncode == 0, done.stderr
    # kubectl itself notes what it did on stderr in __complete mode; nothing else may be there
    noise = [line for line in done.stderr.splitlines()
             if not line.startswith(("[Debug]", "Completion ended with directive"))]
    assert noise == [], done.stderr
    *candidates, directive = done.stdout.splitlines()
    return [c.split("\t")[0] for c in candidates], directive


def _pod(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "app", "image": "busybox", "command": ["sleep", "100000"]}]}}


@pytest.fixture(scope="module")
def cluster(lab_cluster):
    """Pods in `app` and `default`, and a Deployment in `app`, for the lab tests."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cmpl-web", "namespace": "app"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "cmpl-web"}},
                 "template": {"metadata": {"labels": {"app": "cmpl-web"}},
                              "spec": _pod("x", "app")["spec"]}},
    }
    docs = [_pod("cmpl-web-1", "app"), _pod("cmpl-api-1", "app"),
            _pod("cmpl-default-1", "default"), deployment]
    text = "---\n".join(yaml.safe_dump(d) for d in docs)
    lab_cluster.kubectl("apply", "-f", "-", input=text)
    yield lab_cluster
    lab_cluster.kubectl("delete", "-f", "-", "--wait=false", input=text, check=False)


@pytest.mark.lab
@pytest.mark.root
def test_pods_of_the_namespace_given_with_n(installed, cluster):
    candidates, directive = complete(installed, cluster.kubeconfig, "-n", "app", "")
    assert {"cmpl-web-1", "cmpl-api-1"} <= set(candidates)
    assert "cmpl-default-1" not in candidates
    assert directive == ":4"
    narrowed, _ = complete(installed, cluster.kubeconfig, "--namespace=app", "cmpl-w")
    assert narrowed == ["cmpl-web-1"]


@pytest.mark.lab
@pytest.mark.root
def test_first_word_offers_commands_and_the_contexts_namespace_pods(installed, cluster):
    candidates, _ = complete(installed, cluster.kubeconfig, "")
    assert candidates[:len(COMMANDS)] == COMMANDS
    assert "cmpl-default-1" in candidates and "cmpl-web-1" not in candidates


@pytest.mark.lab
@pytest.mark.root
def test_namespaces_and_contexts(installed, cluster):
    namespaces, _ = complete(installed, cluster.kubeconfig, "-n", "")
    assert {"app", "default", "kube-system"} <= set(namespaces)
    contexts, _ = complete(installed, cluster.kubeconfig, "istio-proxy", "--context", "")
    assert contexts == ["lab", "lab-dev"]


@pytest.mark.lab
@pytest.mark.root
def test_the_context_typed_is_the_one_asked(installed, cluster):
    """lab-dev may list pods but not namespaces: what it gets is what that user may see."""
    pods, _ = complete(installed, cluster.kubeconfig, "--context", "lab-dev", "-n", "app", "")
    assert {"cmpl-web-1", "cmpl-api-1"} <= set(pods)


@pytest.mark.lab
@pytest.mark.root
def test_workload_names_after_a_kind_prefix(installed, cluster):
    candidates, _ = complete(installed, cluster.kubeconfig, "-n", "app", "deploy/")
    assert candidates == ["deploy/cmpl-web"]


def _unreachable_kubeconfig(path: Path) -> Path:
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
    }))
    return path


def test_no_cluster_reachable(installed, tmp_path):
    kubeconfig = _unreachable_kubeconfig(tmp_path / "kubeconfig")
    assert complete(installed, kubeconfig, "") == (COMMANDS, ":4")
    assert complete(installed, kubeconfig, "-n", "") == ([], ":4")
    assert complete(installed, kubeconfig, "-n", "app", "") == ([], ":4")
    assert complete(installed, kubeconfig, "--context", "") == (["gone"], ":4")
    assert complete(installed, kubeconfig, "report", "x", "-o", "") == \
        ([f.value for f in Format], ":4")
    assert complete(installed, kubeconfig, "report", "") == ([], ":0")
