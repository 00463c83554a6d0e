"""What a TARGET means, decided from plain pod dicts (no API calls here).

Kept pure so every rule of docs/design.md §3.1 is unit-tested on literal pod data: the TARGET
forms, the default container (``istio-proxy``, then one whose name or command is
``envoy``), Istio's native sidecar (an init container with ``restartPolicy: Always``,
whose status is in ``initContainerStatuses``), container ids with their runtime prefix,
and refusing pods that are not running with the reason the kubelet gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import BadInput, RunFailed

DEFAULT_CONTAINER = "istio-proxy"
#: ``--max-pods``: a TARGET matching more running pods than this is refused.
DEFAULT_MAX_PODS = 20
ENVOY = "envoy"

#: TARGET prefixes (as kubectl spells them) → canonical kind.
KINDS: Dict[str, str] = {
    "pod": "pod", "pods": "pod", "po": "pod",
    "deploy": "deployment", "deployment": "deployment", "deployments": "deployment",
    "statefulset": "statefulset", "statefulsets": "statefulset", "sts": "statefulset",
    "daemonset": "daemonset", "daemonsets": "daemonset", "ds": "daemonset",
    "replicaset": "replicaset", "replicasets": "replicaset", "rs": "replicaset",
    "job": "job", "jobs": "job",
    "node": "node", "nodes": "node", "no": "node",
}


@dataclass(frozen=True)
class TargetSpec:
    """A parsed TARGET: ``kind`` is None for a bare name (a pod, else a container name)."""

    kind: Optional[str]
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" if self.kind else self.name


@dataclass(frozen=True)
class ResolvedTarget:
    """One container to trace: where it is and how the collector finds its processes."""

    namespace: str
    pod: str
    pod_uid: str
    node: str
    container: str
    container_id: str  # without the runtime prefix
    runtime: str  # "containerd", "cri-o", "docker", ...
    native_sidecar: bool = False

    @property
    def pod_ref(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def qualified_id(self) -> str:
        """The id as the kubelet reports it, e.g. ``containerd://0123…``."""
        return f"{self.runtime}://{self.container_id}"

    def label(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"


def parse_target(text: str) -> TargetSpec:
    """``pod/NAME``, ``deploy/NAME`` (and other kinds), ``node/NAME`` or a bare NAME."""
    text = (text or "").strip()
    if not text:
        raise BadInput("TARGET is empty; name a pod, deploy/NAME or a container name")
    if "/" in text:
        prefix, _, name = text.partition("/")
        kind = KINDS.get(prefix.lower().split(".")[0])
        if kind is None:
            known = "pod, deploy, sts, ds, rs, job, node"
            raise BadInput(f"TARGET {text!r}: unknown kind {prefix!r}; use one of {known}")
        if not name or "/" in name:
            raise BadInput(f"TARGET {text!r} should look like {prefix}/NAME")
        return TargetSpec(kind, name)
    return TargetSpec(None, text)


def split_container_id(value: str) -> Tuple[str, str]:
    """``containerd://abc`` → ("containerd", "abc"); a bare id has runtime ""."""
    if "://" in value:
        runtime, _, cid = value.partition("://")
        return runtime, cid
    return "", value


# ---- containers of a pod ------------------------------------------------------------


def _meta(pod: dict) -> dict:
    return pod.get("metadata") or {}


def pod_ref(pod: dict) -> str:
    meta = _meta(pod)
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def native_sidecars(pod: dict) -> List[dict]:
    """Init containers with ``restartPolicy: Always``: they run for the pod's lifetime."""
    return [c for c in (pod.get("spec") or {}).get("initContainers") or []
            if c.get("restartPolicy") == "Always"]


def long_running_containers(pod: dict) -> List[Tuple[dict, bool]]:
    """(container spec, is native sidecar) for every container that runs with the pod."""
    spec = pod.get("spec") or {}
    out = [(c, True) for c in native_sidecars(pod)]
    out.extend((c, False) for c in spec.get("containers") or [])
    return out


def container_names(pod: dict) -> List[str]:
    return [c.get("name", "?") for c, _ in long_running_containers(pod)]


def has_container(pod: dict, name: str) -> bool:
    return name in container_names(pod)


def _runs_envoy(container: dict) -> bool:
    if container.get("name") == ENVOY:
        return True
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    return bool(argv) and os.path.basename(str(argv[0])) == ENVOY


def pick_container(pod: dict, requested: Optional[str]) -> Tuple[dict, bool]:
    """The container to trace: ``-c``, else istio-proxy, else the one running envoy."""
    candidates = long_running_containers(pod)
    names = ", ".join(c.get("name", "?") for c, _ in candidates) or "none"
    if requested:
        for container, native in candidates:
            if container.get("name") == requested:
                return container, native
        raise BadInput(f"pod {pod_ref(pod)} has no container {requested!r} "
                       f"(containers: {names}); pick one with -c")
    for container, native in candidates:
        if container.get("name") == DEFAULT_CONTAINER:
            return container, native
    for container, native in candidates:
        if _runs_envoy(container):
            return container, native
    raise BadInput(f"pod {pod_ref(pod)} has no istio-proxy container and none runs envoy "
                   f"(containers: {names}); pick the Envoy container with -c")


def container_status(pod: dict, name: str, native: bool) -> Optional[dict]:
    status = pod.get("status") or {}
    key = "initContainerStatuses" if native else "containerStatuses"
    for item in status.get(key) or []:
        if item.get("name") == name:
            return item
    return None


def not_running_reason(pod: dict, container: Optional[str] = None,
                       native: bool = False) -> Optional[str]:
    """Why the pod (or its container) is not running, or None when it is."""
    meta = _meta(pod)
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "it is being deleted"
    phase = status.get("phase") or "Unknown"
    if phase != "Running":
        detail = status.get("reason") or ""
        waiting = _first_waiting(status)
        if waiting:
            detail = waiting
        text = f"it is {phase}"
        return f"{text} ({detail})" if detail else text
    if container is None:
        return None
    cstatus = container_status(pod, container, native)
    if cstatus is None:
        return f"container {container} has no status yet"
    state = cstatus.get("state") or {}
    if "running" in state:
        if not cstatus.get("containerID"):
            return f"container {container} has no container id yet"
        return None
    if "waiting" in state:
        wstate = state["waiting"] or {}
        reason = wstate.get("reason") or "waiting"
        return f"container {container} is waiting ({reason})"
    if "terminated" in state:
        term = state["terminated"] or {}
        return (f"container {container} has terminated "
                f"({term.get('reason') or 'exit code ' + str(term.get('exitCode'))})")
    return f"container {container} is not running"


def _first_waiting(status: dict) -> str:
    for key in ("initContainerStatuses", "containerStatuses"):
        for item in status.get(key) or []:
            waiting = (item.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason"):
                return f"{item.get('name')}: {waiting['reason']}"
    return ""


def resolve_pod(pod: dict, requested: Optional[str]) -> ResolvedTarget:
    """The traced container of one pod; refuses a pod that is not running, saying why."""
    meta = _meta(pod)
    why = not_running_reason(pod)
    if why:
        raise RunFailed(f"pod {pod_ref(pod)} is not running: {why}; "
                        "trace a running pod (kubectl get pods shows them)")
    container, native = pick_container(pod, requested)
    name = container.get("name", "?")
    why = not_running_reason(pod, name, native)
    if why:
        raise RunFailed(f"pod {pod_ref(pod)} is not ready to trace: {why}; "
                        "wait until it runs or pick another container with -c")
    cstatus = container_status(pod, name, native) or {}
    runtime, cid = split_container_id(cstatus.get("containerID", ""))
    node = (pod.get("spec") or {}).get("nodeName") or ""
    if not node:
        raise RunFailed(f"pod {pod_ref(pod)} has no node; it is not scheduled yet")
    return ResolvedTarget(
        namespace=meta.get("namespace", ""), pod=meta.get("name", ""),
        pod_uid=meta.get("uid", ""), node=node, container=name,
        container_id=cid, runtime=runtime, native_sidecar=native,
    )


def selector_string(selector: Optional[dict]) -> str:
    """A LabelSelector dict (matchLabels + matchExpressions) as a ``-l`` string."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def group_by_node(targets: List[ResolvedTarget]) -> Dict[str, List[ResolvedTarget]]:
    """One collector per node, carrying every target on it (insertion order kept)."""
    out: Dict[str, List[ResolvedTarget]] = {}
    for target in targets:
        out.setdefault(target.node, []).append(target)
    return out
