"""The API resources the lab serves, for routing and discovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    name: str
    kind: str
    group: str
    version: str
    namespaced: bool
    singular: str
    short: Tuple[str, ...] = ()
    verbs: Tuple[str, ...] = tuple(ALL_VERBS)
    subresources: Dict[str, str] = field(default_factory=dict)  # sub -> kind
    categories: Tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version


RESOURCES: List[Resource] = [
    Resource("namespaces", "Namespace", "", "v1", False, "namespace", ("ns",),
             ("create", "delete", "get", "list", "patch", "update", "watch"),
             {"status": "Namespace", "finalize": "Namespace"}),
    Resource("nodes", "Node", "", "v1", False, "node", ("no",), subresources={"status": "Node"}),
    Resource("pods", "Pod", "", "v1", True, "pod", ("po",),
             subresources={"status": "Pod", "log": "Pod", "binding": "Binding",
                           "eviction": "Eviction"}, categories=("all",)),
    Resource("configmaps", "ConfigMap", "", "v1", True, "configmap", ("cm",)),
    Resource("secrets", "Secret", "", "v1", True, "secret"),
    Resource("services", "Service", "", "v1", True, "service", ("svc",),
             subresources={"status": "Service"}, categories=("all",)),
    Resource("serviceaccounts", "ServiceAccount", "", "v1", True, "serviceaccount", ("sa",)),
    Resource("events", "Event", "", "v1", True, "event", ("ev",)),
    Resource("deployments", "Deployment", "apps", "v1", True, "deployment", ("deploy",),
             subresources={"status": "Deployment", "scale": "Scale"}, categories=("all",)),
    Resource("replicasets", "ReplicaSet", "apps", "v1", True, "replicaset", ("rs",),
             subresources={"status": "ReplicaSet", "scale": "Scale"}, categories=("all",)),
    Resource("daemonsets", "DaemonSet", "apps", "v1", True, "daemonset", ("ds",),
             subresources={"status": "DaemonSet"}, categories=("all",)),
    Resource("statefulsets", "StatefulSet", "apps", "v1", True, "statefulset", ("sts",),
             subresources={"status": "StatefulSet", "scale": "Scale"}, categories=("all",)),
    Resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io",
             "v1", False, "selfsubjectaccessreview", verbs=("create",)),
    Resource("subjectaccessreviews", "SubjectAccessReview", "authorization.k8s.io",
             "v1", False, "subjectaccessreview", verbs=("create",)),
    Resource("selfsubjectrulesreviews", "SelfSubjectRulesReview", "authorization.k8s.io",
             "v1", True, "selfsubjectrulesreview", verbs=("create",)),
    Resource("roles", "Role", "rbac.authorization.k8s.io", "v1", True, "role"),
    Resource("rolebindings", "RoleBinding", "rbac.authorization.k8s.io", "v1", True,
             "rolebinding"),
    Resource("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "v1", False,
             "clusterrole"),
    Resource("clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", "v1",
             False, "clusterrolebinding"),
]

BY_GV_NAME: Dict[Tuple[str, str], Resource] = {(r.group_version, r.name): r for r in RESOURCES}


def group_versions() -> List[Tuple[str, str]]:
    """(group, version) pairs, core first."""
    seen: List[Tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen


def lookup(group_version: str, name: str) -> Optional[Resource]:
    return BY_GV_NAME.get((group_version, name))


def api_resource_list(group: str, version: str) -> dict:
    gv = f"{group}/{version}" if group else version
    out = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry: dict = {
            "name": r.name,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short:
            entry["shortNames"] = list(r.short)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub, kind in r.subresources.items():
            verbs = {"log": ["get"], "binding": ["create"], "eviction": ["create"],
                     "finalize": ["update"]}.get(sub, ["get", "patch", "update"])
            out.append({"name": f"{r.name}/{sub}", "singularName": "", "namespaced": r.namespaced,
                        "kind": kind, "verbs": verbs})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}
