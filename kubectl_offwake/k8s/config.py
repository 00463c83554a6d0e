"""Cluster configuration, found the way kubectl finds it.

Order: ``--kubeconfig`` (one file), else ``$KUBECONFIG`` (a ``:``-separated list merged
first-wins, as kubectl merges it), else ``~/.kube/config``; when none of those exists and
the process runs in a pod, the in-cluster service account. ``--context`` picks a context,
and the namespace comes from ``-n``, else the context's namespace, else ``default``
(in-cluster: the pod's own namespace).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Mapping, Optional

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from ..errors import BadInput

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass
class ClusterConfig:
    """An API client plus what the user meant by 'the cluster' and 'the namespace'."""

    api_client: k8s_client.ApiClient
    namespace: str
    context: Optional[str]
    server: str
    source: str  # where the configuration came from, for messages


def kubeconfig_paths(flag: Optional[str], environ: Mapping[str, str]) -> List[str]:
    """The kubeconfig files kubectl would read, in merge order (existing or not)."""
    if flag:
        return [os.path.expanduser(flag)]
    env = environ.get("KUBECONFIG", "")
    paths = [os.path.expanduser(p) for p in env.split(os.pathsep) if p]
    if paths:
        return paths
    return [os.path.expanduser("~/.kube/config")]


def in_cluster_available(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(SA_NAMESPACE_FILE)


def load(
    kubeconfig: Optional[str] = None,
    context: Optional[str] = None,
    namespace: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> ClusterConfig:
    """Build an API client like kubectl would, or raise BadInput saying what to fix."""
    environ = os.environ if environ is None else environ
    paths = kubeconfig_paths(kubeconfig, environ)
    existing = [p for p in paths if os.path.exists(p)]
    if kubeconfig and not existing:
        raise BadInput(f"--kubeconfig {kubeconfig}: no such file; check the path")
    if not existing:
        if in_cluster_available(environ) and not context:
            return _in_cluster(namespace)
        raise BadInput(
            f"no kubeconfig found (looked at {', '.join(paths)}); "
            "pass --kubeconfig or set KUBECONFIG"
        )
    joined = os.pathsep.join(existing)
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=joined)
    except ConfigException as exc:
        raise BadInput(f"cannot read kubeconfig {joined}: {exc}; fix the file") from None
    except Exception as exc:  # yaml errors, unreadable files
        raise BadInput(f"cannot read kubeconfig {joined}: {exc}; fix the file") from None
    chosen = None
    if context:
        for item in contexts or []:
            if item.get("name") == context:
                chosen = item
                break
        if chosen is None:
            names = ", ".join(sorted(c.get("name", "?") for c in contexts or [])) or "none"
            raise BadInput(f"context {context!r} is not in {joined} (contexts: {names}); "
                           "pick one with --context")
    else:
        # kubectl: the first file that sets current-context wins (the client takes the last)
        first = _first_current_context(existing)
        chosen = next((c for c in contexts or [] if c.get("name") == first), None) or current
        if not chosen:
            raise BadInput(f"{joined} has no current context; pass --context")
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(
            config_file=joined, context=chosen.get("name"),
            client_configuration=configuration, persist_config=False,
        )
    except ConfigException as exc:
        raise BadInput(f"cannot use context {chosen.get('name')!r} of {joined}: {exc}") from None
    context_ns = (chosen.get("context") or {}).get("namespace")
    return ClusterConfig(
        api_client=k8s_client.ApiClient(configuration=configuration),
        namespace=namespace or context_ns or "default",
        context=chosen.get("name"),
        server=configuration.host,
        source=f"kubeconfig {joined}",
    )


def _first_current_context(paths: List[str]) -> Optional[str]:
    import yaml

    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                doc = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and doc.get("current-context"):
            return str(doc["current-context"])
    return None


def _in_cluster(namespace: Optional[str]) -> ClusterConfig:
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise BadInput(f"cannot use the in-cluster service account: {exc}") from None
    own = "default"
    try:
        with open(SA_NAMESPACE_FILE, encoding="utf-8") as handle:
            own = handle.read().strip() or "default"
    except OSError:
        pass
    return ClusterConfig(
        api_client=k8s_client.ApiClient(configuration=configuration),
        namespace=namespace or own,
        context=None,
        server=configuration.host,
        source="in-cluster service account",
    )
