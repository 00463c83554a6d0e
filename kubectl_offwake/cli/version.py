"""``kubectl offwake version``: the plugin's version, the collector image a run would use,
and where that choice came from.

The image needs the cluster only when neither ``--image`` nor ``$OFFWAKE_IMAGE`` decides
(runs read the cluster's ``offwake-config``). When the cluster cannot be asked, the version
is still printed, then one line says why the image is unknown, and the exit code is 1 —
as ``kubectl version`` does when it cannot reach the server.
"""

from __future__ import annotations

import os
from typing import Optional

import typer

from .options import collector_namespace_option, context_option, kubeconfig_option


def version(
    collector_namespace: str = collector_namespace_option(
        "Namespace of the collector pods (and of the cluster's offwake-config)."),
    context: Optional[str] = context_option(),
    kubeconfig: Optional[str] = kubeconfig_option(),
) -> None:
    """Print the plugin's version and the collector image a run would use (and why)."""
    from .. import __version__
    from ..errors import RunFailed, UserError
    from ..k8s.image import choose, needs_cluster

    typer.echo(f"kubectl-offwake {__version__}")
    if needs_cluster(None, os.environ):
        from ..k8s import clusterimage
        from ..k8s.api import Cluster
        from ..k8s.config import load

        try:
            cluster = Cluster(load(kubeconfig, context, None))
            stored = clusterimage.read(cluster, collector_namespace)
        except UserError as exc:
            raise RunFailed(f"the collector image is unknown: cannot read the cluster's choice "
                            f"({exc}); --image or OFFWAKE_IMAGE chooses one without the "
                            "cluster") from None
        choice = choose(None, os.environ, stored, collector_namespace)
    else:
        choice = choose(None, os.environ, None, collector_namespace)
    typer.echo(f"collector image: {choice.image} ({choice.describe()})")
