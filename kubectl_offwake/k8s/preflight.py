"""Permission preflight: ask the API what we may do before creating anything.

One SelfSubjectAccessReview per verb and resource, so the message names exactly what is
missing ("create pods in namespace offwake-system") instead of failing half-way through a
run with a pod already scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from kubernetes import client as k8s_client

from ..errors import RunFailed
from .api import Cluster, call
from .image import CONFIG_MAP


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    namespace: Optional[str]  # None: all namespaces
    group: str = ""
    subresource: str = ""
    optional: bool = False  # missing only degrades the result (said as a warning)
    why: str = ""
    name: str = ""  # one object only (e.g. the ConfigMap offwake-config)

    def describe(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            res = f"{res}.{self.group}"
        if self.name:
            res = f"{res} {self.name}"
        where = f"in namespace {self.namespace}" if self.namespace else "in all namespaces"
        return f"{self.verb} {res} {where}"


WORKLOAD_RESOURCES = {
    "deployment": ("deployments", "apps"),
    "statefulset": ("statefulsets", "apps"),
    "daemonset": ("daemonsets", "apps"),
    "replicaset": ("replicasets", "apps"),
    "job": ("jobs", "batch"),
}


def resolve_permissions(namespace: str, kind: Optional[str]) -> List[Permission]:
    """What resolving TARGET needs."""
    perms = [
        Permission("get", "pods", namespace, why="read the target pod"),
        Permission("list", "pods", namespace, why="find pods by container name or selector"),
    ]
    if kind in WORKLOAD_RESOURCES:
        resource, group = WORKLOAD_RESOURCES[kind]
        perms.append(Permission("get", resource, namespace, group=group,
                                why=f"read the {kind}'s selector"))
    return perms


def image_permission(collector_namespace: str) -> Permission:
    """Reading the cluster's collector image choice (every run, and ``version``)."""
    return Permission("get", "configmaps", collector_namespace, name=CONFIG_MAP,
                      why="read the cluster's collector image")


#: Naming wakers by pod on the node (any namespace); without it, by container id only.
LIST_ALL_PODS = Permission("list", "pods", None, optional=True,
                           why="name wakers by pod and container")


def run_permissions(collector_namespace: str) -> List[Permission]:
    """What running the node pods needs, and the optional naming of wakers."""
    ns = collector_namespace
    perms = [image_permission(ns)]
    perms += [Permission(verb, "configmaps", ns, why="carry the collector")
              for verb in ("create", "patch", "delete")]
    perms += [Permission(verb, "pods", ns, why="run the collector")
              for verb in ("create", "get", "watch", "delete")]
    perms.append(Permission("get", "pods", ns, subresource="log", why="read the collector"))
    perms.append(LIST_ALL_PODS)
    return perms


def setup_permissions(collector_namespace: str, image: bool) -> List[Permission]:
    """What ``setup`` writes: the namespace, the RBAC, and with ``--image`` offwake-config."""
    rbac = "rbac.authorization.k8s.io"
    perms = []
    for verb in ("create", "patch"):
        perms += [
            Permission(verb, "namespaces", None, why="the collector namespace"),
            Permission(verb, "clusterroles", None, group=rbac, why="the resolver role"),
            Permission(verb, "clusterrolebindings", None, group=rbac, why="the resolver role"),
            Permission(verb, "roles", collector_namespace, group=rbac, why="the runner role"),
            Permission(verb, "rolebindings", collector_namespace, group=rbac,
                       why="the runner role"),
        ]
        if image:
            perms.append(Permission(verb, "configmaps", collector_namespace, name=CONFIG_MAP,
                                    why="store the cluster's collector image"))
    return perms


def check(cluster: Cluster, permissions: List[Permission]) -> List[Permission]:
    """The permissions the user lacks (asked one review each, deduplicated)."""
    missing: List[Permission] = []
    seen = set()
    for perm in permissions:
        key = (perm.verb, perm.resource, perm.subresource, perm.group, perm.namespace,
               perm.name)
        if key in seen:
            continue
        seen.add(key)
        if not allowed(cluster, perm):
            missing.append(perm)
    return missing


def allowed(cluster: Cluster, perm: Permission) -> bool:
    review = k8s_client.V1SelfSubjectAccessReview(
        spec=k8s_client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=k8s_client.V1ResourceAttributes(
                namespace=perm.namespace, verb=perm.verb, resource=perm.resource,
                group=perm.group, subresource=perm.subresource or None,
                name=perm.name or None,
            )
        )
    )
    answer = call("check permissions (SelfSubjectAccessReview)",
                  cluster.auth.create_self_subject_access_review, review,
                  server=cluster.config.server)
    status = getattr(answer, "status", None)
    return bool(status is not None and status.allowed)


#: What to do about missing permissions of a run (the RBAC of manifests/).
ASK_FOR_RBAC = ("ask a cluster admin to grant the RBAC in manifests/ "
                "(kubectl offwake setup --dry-run prints it)")
#: What to do about missing permissions of ``setup``.
ASK_AN_ADMIN = "run `kubectl offwake setup` as a cluster admin"


def require(cluster: Cluster, permissions: List[Permission],
            advice: str = ASK_FOR_RBAC) -> List[Permission]:
    """Raise naming every missing required permission; return the optional ones missing."""
    missing = check(cluster, permissions)
    required = [p for p in missing if not p.optional]
    if required:
        listed = ", ".join(p.describe() for p in required)
        raise RunFailed(f"you are not allowed to {listed}; {advice}")
    return [p for p in missing if p.optional]


def degraded(perm: Permission) -> str:
    """The warning for a missing optional permission: what the run does without it."""
    return f"cannot {perm.describe()}, so wakers are named by container id only"
