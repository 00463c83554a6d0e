"""``kubectl offwake cleanup``: remove collector pods and ConfigMaps left behind.

A run always deletes what it created; leftovers exist only when the client was killed
(SIGKILL, a lost laptop). Their collectors have stopped by then (activeDeadlineSeconds).
"""

from __future__ import annotations

from typing import Optional

import typer

from .options import collector_namespace_option, context_option, kubeconfig_option


def cleanup(
    collector_namespace: str = collector_namespace_option(
        "Namespace of the collector pods."),
    context: Optional[str] = context_option(),
    kubeconfig: Optional[str] = kubeconfig_option(),
) -> None:
    """Delete every collector pod and ConfigMap in the collector namespace (labelled
    app.kubernetes.io/name=offwake-collector); the cluster's offwake-config stays."""
    from ..k8s import admin
    from ..k8s.api import Cluster
    from ..k8s.config import load

    cluster = Cluster(load(kubeconfig, context, None))
    removed = admin.cleanup(cluster, collector_namespace)
    for name in removed:
        typer.echo(f"deleted {name}", err=True)
    typer.echo(f"removed {len(removed)} leftover object(s) from namespace "
               f"{collector_namespace}", err=True)
