"""``kubectl offwake TARGET`` up to the run: every step that asks the API before a pod exists.

config → preflight (read) → resolve → [--dry-run: print, stop] → preflight (create) →
collector image chosen (flag, environment, the cluster's offwake-config, default). The run
itself (one collector per node, streamed, stopped, reported) is
:mod:`kubectl_offwake.pipeline.cluster`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..collector.bundle import build_zipapp
from ..errors import say
from . import clusterimage, preflight
from .api import Cluster
from .config import load as load_config
from .fleet import FleetOptions, plan
from .image import ImageChoice, choose, needs_cluster
from .podspec import (
    DEFAULT_COLLECTOR_NAMESPACE,
    DEFAULT_INTERVAL_S,
    collector_configmap,
    manifests_yaml,
    new_run_id,
    node_pod,
    zipapp_sha256,
)
from .resolve import DEFAULT_MAX_PODS, resolve
from .targets import ResolvedTarget, parse_target


@dataclass
class TraceRequest:
    target: Optional[str]
    namespace: Optional[str] = None
    container: Optional[str] = None
    selector: Optional[str] = None
    duration_s: float = 30.0
    fmt: Optional[str] = None
    out: Optional[str] = None
    context: Optional[str] = None
    kubeconfig: Optional[str] = None
    image: Optional[str] = None  # --image; else $OFFWAKE_IMAGE, the cluster's, the default
    collector_namespace: str = DEFAULT_COLLECTOR_NAMESPACE
    dry_run: bool = False
    max_pods: int = DEFAULT_MAX_PODS
    save: Optional[str] = None
    interval_s: float = DEFAULT_INTERVAL_S
    #: Passed to every node's collector as they are (the map sizes).
    collector_args: List[str] = field(default_factory=list)
    #: Client records each node's recording carries after ``hello`` (the command's own).
    client_records: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class PreparedRun:
    """Everything the run needs that the API said: the cluster, the targets, the image."""

    cluster: Cluster
    targets: List[ResolvedTarget]
    run_id: str
    zipapp: bytes
    choice: ImageChoice
    options: FleetOptions
    #: Whether wakers can be named from every namespace's pods (else the targets' only).
    name_all_namespaces: bool

    @property
    def nodes(self) -> List[str]:
        return sorted({t.node for t in self.targets})


def prepare(req: TraceRequest) -> Optional[PreparedRun]:
    """Resolve TARGET and check what the run needs; None after a --dry-run printed it."""
    spec = parse_target(req.target) if req.target else None
    config = load_config(req.kubeconfig, req.context, req.namespace)
    cluster = Cluster(config)
    namespace = config.namespace
    for perm in preflight.require(
            cluster, preflight.resolve_permissions(namespace, spec.kind if spec else None)):
        say(f"warning: {preflight.degraded(perm)}")
    resolution = resolve(cluster, req.target, namespace, req.container, req.selector,
                         req.max_pods)
    for skipped in resolution.skipped:
        say(f"skipping {skipped}")
    targets = resolution.targets
    run_id = new_run_id()
    zipapp = build_zipapp()  # the collector, built from this very installation
    if req.dry_run:
        _dry_run(cluster, targets, req, run_id, zipapp)
        return None
    missing = preflight.require(cluster, preflight.run_permissions(req.collector_namespace))
    for perm in missing:
        say(f"warning: {preflight.degraded(perm)}")
    choice = clusterimage.image_choice(cluster, req.collector_namespace, req.image, os.environ)
    return PreparedRun(cluster, targets, run_id, zipapp, choice,
                       _fleet_options(req, run_id, choice, zipapp),
                       name_all_namespaces=preflight.LIST_ALL_PODS not in missing)


def _fleet_options(req: TraceRequest, run_id: str, choice: ImageChoice,
                   zipapp: bytes) -> FleetOptions:
    return FleetOptions(
        run_id=run_id, collector_namespace=req.collector_namespace, image=choice.image,
        collector_sha256=zipapp_sha256(zipapp), duration_s=req.duration_s,
        interval_s=req.interval_s, collector_args=list(req.collector_args),
    )


def _dry_run(cluster: Cluster, targets: List[ResolvedTarget], req: TraceRequest,
             run_id: str, zipapp: bytes) -> None:
    missing = preflight.check(cluster, preflight.run_permissions(req.collector_namespace))
    stored: Optional[str] = None
    unread = ""
    if needs_cluster(req.image, os.environ):
        if preflight.image_permission(req.collector_namespace) in missing:
            unread = " (the cluster's choice could not be read: see the notes)"
        else:
            stored = clusterimage.read(cluster, req.collector_namespace)
    choice = choose(req.image, os.environ, stored, req.collector_namespace)
    options = _fleet_options(req, run_id, choice, zipapp)
    objects: List[dict] = []
    for opts in plan(targets, options):
        # The pod first: it is what a reader checks; the ConfigMap after it is mostly the
        # collector zipapp in base64.
        objects.append(node_pod(opts))
        objects.append(collector_configmap(opts, zipapp))
    header = ["# kubectl offwake --dry-run: nothing was created.",
              f"# targets: {', '.join(t.label() for t in targets)}",
              f"# collector image: {choice.image} ({choice.describe()}){unread}",
              f"# collector zipapp sha256: {options.collector_sha256} (the pod's command "
              "checks it before running the zipapp)"]
    for perm in missing:
        header.append(f"# note: you may not {perm.describe()}"
                      + (" (optional)" if perm.optional else ""))
    sys.stdout.write("\n".join(header) + "\n" + manifests_yaml(objects))
    sys.stdout.flush()
