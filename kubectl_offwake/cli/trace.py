"""``kubectl offwake TARGET``: trace Envoy in pods (hidden command; cli/__init__ routes to it).

Thin: options in, :func:`kubectl_offwake.pipeline.cluster.run_trace` does the work.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

# constants only: this module does not import the kubernetes client (kept lazy for speed)
from ..k8s.targets import DEFAULT_MAX_PODS
from .options import (
    Format,
    client_record,
    collector_namespace_option,
    context_option,
    kubeconfig_option,
    map_size_args,
    map_size_option,
    parse_duration,
)


def trace(
    target: Optional[str] = typer.Argument(
        None, metavar="TARGET",
        help="pod/NAME, deploy/NAME (sts/ds/rs/job/node too), a pod name, or a container "
             "name (every running pod in the namespace with that container).",
    ),
    namespace: Optional[str] = typer.Option(
        None, "--namespace", "-n", help="Namespace of TARGET (default: the context's)."),
    container: Optional[str] = typer.Option(
        None, "--container", "-c",
        help="Container to trace (default: istio-proxy, else the one running envoy)."),
    selector: Optional[str] = typer.Option(
        None, "--selector", "-l", help="Only pods with these labels, e.g. app=web."),
    duration: str = typer.Option("30s", "--duration", "-d",
                                 help="How long to trace: 10, 10s, 2m."),
    fmt: Optional[Format] = typer.Option(
        None, "--format", "-o", help="Report format (default: from --out's suffix, else table)."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to this file."),
    context: Optional[str] = context_option(),
    kubeconfig: Optional[str] = kubeconfig_option(),
    image: Optional[str] = typer.Option(
        None, "--image", metavar="REF",
        help="Collector image for this run (default: $OFFWAKE_IMAGE, else the cluster's "
             "choice from `kubectl offwake setup --image`, else this version's image)."),
    collector_namespace: str = collector_namespace_option(
        "Namespace for the collector pods (see `kubectl offwake setup`)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Resolve TARGET and print the manifests; create nothing."),
    max_pods: int = typer.Option(
        DEFAULT_MAX_PODS, "--max-pods", min=1,
        help="Refuse a TARGET matching more pods than this."),
    save: Optional[str] = typer.Option(
        None, "--save",
        help="Where to save the recording (default offwake-RUNID.jsonl.gz here)."),
    interval: str = typer.Option("2s", "--interval", hidden=True,
                                 help="Collector snapshot interval."),
    stack_storage_size: Optional[int] = map_size_option("--stack-storage-size"),
    agg_size: Optional[int] = map_size_option("--agg-size"),
    start_size: Optional[int] = map_size_option("--start-size"),
    oncpu_size: Optional[int] = map_size_option("--oncpu-size"),
) -> None:
    """Trace why Envoy's threads were off the CPU in TARGET, and who woke them."""
    from ..k8s.session import TraceRequest
    from ..pipeline.cluster import guard, run_trace

    request = TraceRequest(
        target=target, namespace=namespace, container=container, selector=selector,
        duration_s=parse_duration(duration), fmt=fmt.value if fmt else None, out=out,
        context=context, kubeconfig=kubeconfig, image=image,
        collector_namespace=collector_namespace, dry_run=dry_run, max_pods=max_pods,
        save=save, interval_s=parse_duration(interval, "--interval"),
        collector_args=map_size_args(stack_storage_size, agg_size, start_size, oncpu_size),
        client_records=[client_record("kubectl offwake TARGET")],
    )
    code = guard(lambda: run_trace(request))
    if code:
        # SystemExit, not typer.Exit: with standalone_mode=False click would swallow the code
        sys.exit(code)
