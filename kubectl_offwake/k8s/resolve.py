"""TARGET → the running containers to trace, asking the API (rules live in targets.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import BadInput, RunFailed
from .api import Cluster, get_json, maybe_json
from .targets import (
    DEFAULT_MAX_PODS,
    ResolvedTarget,
    TargetSpec,
    has_container,
    not_running_reason,
    parse_target,
    pick_container,
    pod_ref,
    resolve_pod,
    selector_string,
)


@dataclass
class Resolution:
    """The targets, and the matching pods that were left out (with why)."""

    targets: List[ResolvedTarget] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    description: str = ""


def resolve(cluster: Cluster, target: Optional[str], namespace: str,
            container: Optional[str] = None, selector: Optional[str] = None,
            max_pods: int = DEFAULT_MAX_PODS) -> Resolution:
    """Every container TARGET names, or a BadInput/RunFailed saying what did not match."""
    if not target and not selector:
        raise BadInput("name a TARGET (a pod, deploy/NAME or a container name) or pass -l")
    spec = parse_target(target) if target else None
    if spec is not None and spec.kind == "pod":
        if selector:
            raise BadInput("-l selects pods; it cannot be combined with pod/NAME")
        pod = _get_pod(cluster, namespace, spec.name)
        if pod is None:
            raise BadInput(f"pod {spec.name!r} not found in namespace {namespace}; "
                           f"check the name and -n (kubectl get pods -n {namespace})")
        return Resolution([resolve_pod(pod, container)], [], f"pod {namespace}/{spec.name}")
    if spec is not None and spec.kind is None:
        pod = None if selector else _get_pod(cluster, namespace, spec.name)
        if pod is not None:
            return Resolution([resolve_pod(pod, container)], [],
                              f"pod {namespace}/{spec.name}")
        if container and container != spec.name:
            raise BadInput(f"no pod named {spec.name!r} in namespace {namespace}; "
                           f"check the name and -n (kubectl get pods -n {namespace})")
        pods = _list_pods(cluster, namespace, selector)
        matching = [p for p in pods if has_container(p, spec.name)]
        if not matching:
            where = f"namespace {namespace}" + (f" matching -l {selector}" if selector else "")
            raise BadInput(f"no pod named {spec.name!r} and no pod with a container named "
                           f"{spec.name!r} in {where}; check the name and -n "
                           f"(kubectl get pods -n {namespace})")
        return _many(matching, spec.name, max_pods,
                     f"container {spec.name} in namespace {namespace}", str(spec))
    if spec is not None and spec.kind == "node":
        pods = _list_pods(cluster, namespace, selector, node=spec.name)
        if container:
            pods = [p for p in pods if has_container(p, container)]
        else:
            pods = [p for p in pods if _has_envoy(p)]
        if not pods:
            raise BadInput(f"no pod with an Envoy container on node {spec.name} in namespace "
                           f"{namespace}; check the node name and -n")
        return _many(pods, container, max_pods, f"node {spec.name}", str(spec))
    if spec is not None:
        workload_selector = _workload_selector(cluster, namespace, spec)
        combined = ",".join(s for s in (workload_selector, selector) if s)
        pods = _list_pods(cluster, namespace, combined)
        if not pods:
            raise RunFailed(f"{spec} has no pods in namespace {namespace}; "
                            "is it scaled to zero?")
        return _many(pods, container, max_pods, f"{spec} in namespace {namespace}", str(spec))
    pods = _list_pods(cluster, namespace, selector)
    if not pods:
        raise BadInput(f"no pod in namespace {namespace} matches -l {selector}; "
                       "check the selector and -n")
    return _many(pods, container, max_pods, f"pods matching -l {selector}", f"-l {selector}")


def _has_envoy(pod: dict) -> bool:
    try:
        pick_container(pod, None)
    except BadInput:
        return False
    return True


def _many(pods: List[dict], container: Optional[str], max_pods: int, description: str,
          target_text: str) -> Resolution:
    """Resolve several pods: not-running ones are skipped (and said), the rest capped."""
    result = Resolution(description=description)
    for pod in pods:
        chosen, native = pick_container(pod, container)
        why = not_running_reason(pod) or not_running_reason(pod, chosen.get("name"), native)
        if why:
            result.skipped.append(f"{pod_ref(pod)}: {why}")
            continue
        result.targets.append(resolve_pod(pod, chosen.get("name")))
    if not result.targets:
        reasons = "; ".join(result.skipped[:5])
        raise RunFailed(f"none of the {len(pods)} pod(s) of {target_text} is running ({reasons}); "
                        "wait until they run")
    if len(result.targets) > max_pods:
        raise BadInput(f"{target_text} matches {len(result.targets)} running pods, more than "
                       f"--max-pods {max_pods}; narrow it with -l or raise --max-pods")
    return result


def _get_pod(cluster: Cluster, namespace: str, name: str) -> Optional[dict]:
    pod = maybe_json(f"get pod {name} in namespace {namespace}",
                     cluster.core.read_namespaced_pod, name, namespace,
                     server=cluster.config.server)
    return pod if isinstance(pod, dict) else None


def _list_pods(cluster: Cluster, namespace: str, selector: Optional[str],
               node: Optional[str] = None) -> List[dict]:
    kwargs = {}
    if selector:
        kwargs["label_selector"] = selector
    if node:
        kwargs["field_selector"] = f"spec.nodeName={node}"
    data = get_json(f"list pods in namespace {namespace}",
                    cluster.core.list_namespaced_pod, namespace,
                    server=cluster.config.server, **kwargs)
    items = data.get("items") or []
    for item in items:  # list items carry no apiVersion/kind; keep namespace for messages
        item.setdefault("metadata", {}).setdefault("namespace", namespace)
    return sorted(items, key=lambda p: (p.get("metadata") or {}).get("name", ""))


def _workload_selector(cluster: Cluster, namespace: str, spec: TargetSpec) -> str:
    readers = {
        "deployment": cluster.apps.read_namespaced_deployment,
        "statefulset": cluster.apps.read_namespaced_stateful_set,
        "daemonset": cluster.apps.read_namespaced_daemon_set,
        "replicaset": cluster.apps.read_namespaced_replica_set,
        "job": cluster.batch.read_namespaced_job,
    }
    reader = readers[spec.kind or ""]
    obj = maybe_json(f"get {spec} in namespace {namespace}", reader, spec.name, namespace,
                     server=cluster.config.server)
    if not isinstance(obj, dict):
        raise BadInput(f"{spec.kind} {spec.name!r} not found in namespace {namespace}; "
                       f"check the name and -n")
    selector = selector_string((obj.get("spec") or {}).get("selector"))
    if not selector:
        raise RunFailed(f"{spec} has no pod selector; trace its pods by name instead")
    return selector
