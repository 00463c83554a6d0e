"""``setup`` (apply the namespace and RBAC) and ``cleanup`` (remove leftovers)."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from ..errors import RunFailed
from .api import Cluster, call, get_json, status_message
from .podspec import COLLECTOR_SELECTOR
from .setup_objects import all_objects

MERGE_PATCH = "application/merge-patch+json"


def _api_for(cluster: Cluster, kind: str) -> Tuple[Callable, Callable]:
    """(create, patch) callables for one kind, namespaced ones bound by the caller."""
    rbac = k8s_client.RbacAuthorizationV1Api(cluster.config.api_client)
    table: Dict[str, Tuple[Callable, Callable]] = {
        "Namespace": (cluster.core.create_namespace, cluster.core.patch_namespace),
        "ClusterRole": (rbac.create_cluster_role, rbac.patch_cluster_role),
        "ClusterRoleBinding": (rbac.create_cluster_role_binding,
                               rbac.patch_cluster_role_binding),
        "Role": (rbac.create_namespaced_role, rbac.patch_namespaced_role),
        "RoleBinding": (rbac.create_namespaced_role_binding,
                        rbac.patch_namespaced_role_binding),
        "ConfigMap": (cluster.core.create_namespaced_config_map,
                      cluster.core.patch_namespaced_config_map),
    }
    return table[kind]


def apply(cluster: Cluster, namespace: str, image: Optional[str] = None) -> List[str]:
    """Create each object, or bring an existing one up to date; returns what was done.

    With ``image``, also the cluster's collector image choice (ConfigMap offwake-config).
    """
    done = []
    for obj in all_objects(namespace, image):
        kind, meta = obj["kind"], obj["metadata"]
        create, patch = _api_for(cluster, kind)
        ns_args = [meta["namespace"]] if "namespace" in meta else []
        what = f"{kind} {meta['name']}"
        try:
            call(f"create {what}", create, *ns_args, obj, server=cluster.config.server)
            done.append(f"created {what}")
            continue
        except ApiException as exc:  # only a 404 gets here: the namespace is missing
            raise RunFailed(f"cannot create {what}: {status_message(exc)}") from None
        except RunFailed as exc:
            if not _already_exists(exc):
                raise
        call(f"update {what}", patch, meta["name"], *ns_args, obj,
             _content_type=MERGE_PATCH, server=cluster.config.server)
        done.append(f"updated {what}")
    return done


def _already_exists(exc: RunFailed) -> bool:
    text = str(exc)
    return "already exists" in text or "AlreadyExists" in text


def cleanup(cluster: Cluster, namespace: str) -> List[str]:
    """Delete every collector pod and ConfigMap in ``namespace``; returns their names.

    Only collector objects (:data:`COLLECTOR_SELECTOR`): the cluster's image choice
    (offwake-config) is setup's and stays.
    """
    removed: List[str] = []
    listers = [
        ("pod", cluster.core.list_namespaced_pod, cluster.core.delete_namespaced_pod),
        ("configmap", cluster.core.list_namespaced_config_map,
         cluster.core.delete_namespaced_config_map),
    ]
    for kind, lister, deleter in listers:
        try:
            data = get_json(f"list {kind}s in namespace {namespace}", lister, namespace,
                            label_selector=COLLECTOR_SELECTOR, server=cluster.config.server)
        except ApiException as exc:
            if exc.status == 404:
                return removed
            raise
        for item in data.get("items") or []:
            name = item["metadata"]["name"]
            try:
                kwargs = {"grace_period_seconds": 0} if kind == "pod" else {}
                call(f"delete {kind} {namespace}/{name}", deleter, name, namespace,
                     server=cluster.config.server, **kwargs)
                removed.append(f"{kind}/{name}")
            except ApiException as exc:
                if exc.status != 404:
                    raise
    return removed
