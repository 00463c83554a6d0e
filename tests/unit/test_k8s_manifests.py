"""Everything this tool creates on a cluster, and everything in manifests/, against the real
API schemas (PyPI's kubernetes-validate, strict: no unknown fields) of the oldest and the
newest Kubernetes it supports (manifests/README.md)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import List

import kubernetes_validate  # the dev extra installs it; a missing module fails, never skips
import pytest
import yaml

from kubectl_offwake.k8s import podspec, setup_objects
from kubectl_offwake.k8s.image import default_image
from kubectl_offwake.k8s.targets import ResolvedTarget

#: The Kubernetes versions whose schemas every manifest must pass (manifests/README.md).
OLDEST, NEWEST = "1.25", "1.37"
VERSIONS = (OLDEST, NEWEST)
REPO = Path(__file__).resolve().parents[2]
ZIPAPP = b"PK\x03\x04 a collector"


def _node_objects() -> List[dict]:
    opts = podspec.NodePodOptions(
        run_id="ab12cd34", node="ip-10-0-0-1.ec2.internal", image=default_image(),
        collector_sha256=hashlib.sha256(ZIPAPP).hexdigest(), duration_s=30, targets=[
            ResolvedTarget("app", "web-1", "uid-1", "ip-10-0-0-1.ec2.internal", "istio-proxy",
                           "a" * 64, "containerd"),
            ResolvedTarget("app", "web-2", "uid-2", "ip-10-0-0-1.ec2.internal", "istio-proxy",
                           "b" * 64, "cri-o", True)])
    pod = podspec.node_pod(opts)
    configmap = podspec.collector_configmap(opts, ZIPAPP)
    # as the run sends it once the pod exists (the patch that makes the pod its owner)
    owned = copy.deepcopy(configmap)
    owned["metadata"]["ownerReferences"] = [
        podspec.owner_reference({"metadata": {"name": pod["metadata"]["name"], "uid": "u-1"}})]
    return [pod, configmap, owned]


def _created() -> List[dict]:
    return _node_objects() + setup_objects.all_objects(image="reg.example/offwake:1")


def _manifest_files() -> List[dict]:
    docs = []
    for path in sorted((REPO / "manifests").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _validate(obj: dict, version: str) -> None:
    try:
        assert kubernetes_validate.validate(obj, version, strict=True) == version
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')} is not a valid {version} "
                    f"object at {where or 'the top'}: {exc.message[:300]}")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_a_run_or_setup_creates_is_valid(version):
    objects = _created()
    assert {o["kind"] for o in objects} == {"Pod", "ConfigMap", "Namespace", "ClusterRole",
                                            "ClusterRoleBinding", "Role", "RoleBinding"}
    for obj in objects:
        _validate(obj, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_everything_in_manifests_is_valid(version):
    docs = _manifest_files()
    assert len(docs) == 5
    for obj in docs:
        _validate(obj, version)


def test_the_validation_can_fail():
    """A field the API does not know, in a place the tool writes, is refused (strict)."""
    pod = _node_objects()[0]
    pod["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostPid"):
        kubernetes_validate.validate(pod, NEWEST, strict=True)
    configmap = _node_objects()[1]
    configmap["immutable"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(configmap, OLDEST, strict=True)


def test_the_supported_versions_are_the_documented_ones():
    text = (REPO / "manifests" / "README.md").read_text()
    assert f"Kubernetes {OLDEST} to {NEWEST}" in text
