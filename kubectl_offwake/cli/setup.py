"""``kubectl offwake setup [--dry-run]``: the collector namespace and the users' RBAC."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .trace import DEFAULT_COLLECTOR_NAMESPACE


def setup(
    collector_namespace: str = typer.Option(
        DEFAULT_COLLECTOR_NAMESPACE, "--collector-namespace",
        help="Namespace to create for the collector pods."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the manifests instead of applying them."),
    context: Optional[str] = typer.Option(None, "--context", help="Kubeconfig context."),
    kubeconfig: Optional[str] = typer.Option(None, "--kubeconfig", help="Kubeconfig file."),
) -> None:
    """Create the collector namespace (Pod Security privileged, no sidecar injection) and
    the RBAC users need (manifests/README.md). Run once per cluster, as a cluster admin."""
    from ..k8s.setup_objects import all_objects

    if dry_run:
        import yaml

        docs = [yaml.safe_dump(obj, sort_keys=False) for obj in all_objects(collector_namespace)]
        sys.stdout.write("---\n".join(docs))
        return
    from ..k8s import admin
    from ..k8s.api import Cluster
    from ..k8s.config import load

    cluster = Cluster(load(kubeconfig, context, None))
    for line in admin.apply(cluster, collector_namespace):
        typer.echo(line, err=True)
    typer.echo(f"ready: collector pods will run in namespace {collector_namespace}", err=True)
