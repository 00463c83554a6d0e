"""Which collector image a run uses: flag, environment, the cluster's choice, the default."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kubectl_offwake import __version__
from kubectl_offwake.errors import BadInput, RunFailed
from kubectl_offwake.k8s import image, preflight, setup_objects
from kubectl_offwake.k8s.image import ImageChoice, choose, default_image

NS = "offwake-system"
FLAG = "reg.example:5000/team/offwake-collector:flag"
ENV = "127.0.0.1:5000/offwake-collector:env"
CLUSTER = "reg.example/offwake-collector@sha256:" + "a" * 64


def test_the_default_is_the_versions_image():
    assert default_image() == f"ghcr.io/kubectl-offwake/collector:{__version__}"
    assert default_image("9.8.7") == f"{image.DEFAULT_REPOSITORY}:9.8.7"


@pytest.mark.parametrize("flag,env,cluster,expected", [
    (FLAG, ENV, CLUSTER, ImageChoice(FLAG, "flag", NS)),
    (None, ENV, CLUSTER, ImageChoice(ENV, "environment", NS)),
    (None, "", CLUSTER, ImageChoice(CLUSTER, "cluster", NS)),
    (None, "", None, ImageChoice(default_image(), "default", NS)),
    ("  ", " ", "", ImageChoice(default_image(), "default", NS)),
])
def test_precedence_flag_environment_cluster_default(flag, env, cluster, expected):
    assert choose(flag, {image.ENV_VAR: env}, cluster, NS) == expected
    assert image.needs_cluster(flag, {image.ENV_VAR: env}) is (expected.origin in
                                                              ("cluster", "default"))


def test_each_origin_says_where_it_came_from():
    assert ImageChoice(FLAG, "flag").describe() == "from --image"
    assert ImageChoice(ENV, "environment").describe() == "from $OFFWAKE_IMAGE"
    assert ImageChoice(CLUSTER, "cluster", NS).describe() == (
        "the cluster's choice: ConfigMap offwake-system/offwake-config, set by "
        "`kubectl offwake setup --image`")
    assert ImageChoice(default_image(), "default").describe() == \
        f"the default of kubectl-offwake {__version__}"


@pytest.mark.parametrize("ref", [
    "busybox", "offwake-collector:dev", "127.0.0.1:41234/offwake-collector:dev",
    "ghcr.io/kubectl-offwake/collector:0.1.0", "localhost/a/b/c:1.2_rc-3", CLUSTER])
def test_references_are_accepted(ref):
    assert image.check_reference(f" {ref} ", "--image") == ref


@pytest.mark.parametrize("ref", ["", "Upper/Case:1", "reg/img:", "reg/img:tag with space",
                                 "http://reg/img:1", "reg/img@sha256:abc", "-rf"])
def test_what_is_no_reference_is_refused_naming_where_it_came_from(ref):
    with pytest.raises(BadInput, match=r"^--image .* is not an image reference; use one like"):
        choose(ref or "x y", {}, None, NS)
    with pytest.raises(BadInput, match=r"^\$OFFWAKE_IMAGE .* is not an image reference"):
        choose(None, {image.ENV_VAR: ref or "x y"}, None, NS)
    with pytest.raises(RunFailed, match=r"^ConfigMap offwake-system/offwake-config key 'image' "
                                        r".*; fix it with `kubectl offwake setup --image REF`"):
        choose(None, {}, ref or "x y", NS)


def test_setup_stores_the_choice_where_runs_read_it():
    (config,) = [o for o in setup_objects.all_objects(NS, CLUSTER) if o["kind"] == "ConfigMap"]
    assert config["metadata"]["name"] == image.CONFIG_MAP == "offwake-config"
    assert config["metadata"]["namespace"] == NS
    assert config["data"] == {image.CONFIG_KEY: CLUSTER}
    assert "app.kubernetes.io/name" not in config["metadata"]["labels"]  # cleanup keeps it
    assert not [o for o in setup_objects.all_objects(NS) if o["kind"] == "ConfigMap"]


def test_runs_and_setup_check_the_config_permissions_first():
    read = preflight.image_permission(NS)
    assert read in preflight.run_permissions(NS) and not read.optional
    assert read.describe() == "get configmaps offwake-config in namespace offwake-system"
    writes = {p.describe() for p in preflight.setup_permissions(NS, image=True)}
    assert {"create configmaps offwake-config in namespace offwake-system",
            "patch configmaps offwake-config in namespace offwake-system"} <= writes
    assert not any("configmaps" in p for p in
                   (q.describe() for q in preflight.setup_permissions(NS, image=False)))


def test_the_module_never_imports_the_kubernetes_client():
    """The release workflow imports it to learn the reference it pushes."""
    tree = ast.parse(Path(image.__file__).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any("kubernetes" in name for name in names), names
