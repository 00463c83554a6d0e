"""``kubectl offwake setup [--image REF] [--dry-run]``: the collector namespace, the users'
RBAC and, with ``--image``, the cluster's collector image."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ..errors import say
from .options import collector_namespace_option, context_option, kubeconfig_option


def setup(
    collector_namespace: str = collector_namespace_option(
        "Namespace to create for the collector pods."),
    image: Optional[str] = typer.Option(
        None, "--image", metavar="REF",
        help="Make REF the cluster's collector image (ConfigMap offwake-config): every run "
             "uses it unless --image or $OFFWAKE_IMAGE says otherwise."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the manifests instead of applying them."),
    context: Optional[str] = context_option(),
    kubeconfig: Optional[str] = kubeconfig_option(),
) -> None:
    """Create the collector namespace (Pod Security privileged, no sidecar injection) and
    the RBAC users need (manifests/README.md); with --image, store the cluster's collector
    image. Run once per cluster, as a cluster admin."""
    from ..k8s.image import check_reference
    from ..k8s.setup_objects import all_objects

    chosen = check_reference(image, "--image") if image is not None else None
    if dry_run:
        import yaml

        docs = [yaml.safe_dump(obj, sort_keys=False)
                for obj in all_objects(collector_namespace, chosen)]
        sys.stdout.write("---\n".join(docs))
        return
    from ..k8s import admin, clusterimage, preflight
    from ..k8s.api import Cluster
    from ..k8s.config import load
    from ..k8s.image import ImageChoice, default_image

    cluster = Cluster(load(kubeconfig, context, None))
    preflight.require(cluster, preflight.setup_permissions(collector_namespace, chosen is not None),
                      advice=preflight.ASK_AN_ADMIN)
    for line in admin.apply(cluster, collector_namespace, chosen):
        say(line)
    say(f"ready: collector pods will run in namespace {collector_namespace}")
    stored = clusterimage.read(cluster, collector_namespace)  # anyone's text: say() escapes it
    if stored:
        choice = ImageChoice(stored, "cluster", collector_namespace)
        say(f"collector image: {stored} ({choice.describe()})")
    else:
        say(f"collector image: none chosen for the cluster; runs use --image, "
            f"$OFFWAKE_IMAGE or the default {default_image()}")
