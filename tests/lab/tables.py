"""Server-side printing (meta.k8s.io/v1 Table), so `kubectl get` shows what it shows on a cluster.

The pod STATUS column follows kubectl's printPod logic (Init:N/M, waiting reasons,
Completed, Terminating) because tests and humans read it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Tuple

Obj = Dict[str, Any]


def _age(ts: str) -> str:
    if not ts:
        return "<unknown>"
    t = _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    secs = int((_dt.datetime.now(_dt.timezone.utc) - t).total_seconds())
    if secs < 0:
        secs = 0
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def col(name: str, typ: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": typ, "format": fmt, "description": name, "priority": priority}


def pod_status_text(pod: Obj) -> Tuple[str, int, str]:
    """(STATUS, restarts, ready 'n/m') as kubectl prints them."""
    st = pod.get("status") or {}
    spec = pod.get("spec") or {}
    reason = st.get("reason") or st.get("phase") or "Pending"
    restarts = 0
    inits = spec.get("initContainers") or []
    init_statuses = st.get("initContainerStatuses") or []
    sidecars = {c["name"] for c in inits if c.get("restartPolicy") == "Always"}
    total = len(spec.get("containers") or []) + len(sidecars)
    ready = 0
    initializing = False
    for i, cs in enumerate(init_statuses):
        restarts += cs.get("restartCount", 0)
        state = cs.get("state") or {}
        if cs["name"] in sidecars:
            if cs.get("ready"):
                ready += 1
            if state.get("running"):
                continue
        term = state.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif state.get("waiting") and state["waiting"].get("reason") not in (None, "",
                                                                              "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(inits)}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in st.get("conditions") or [])
    if initializing and initialized:
        # like kubectl: once the pod is initialized, init/sidecar trouble is not the status
        initializing = False
        reason = st.get("reason") or st.get("phase") or "Pending"
        restarts = sum(cs.get("restartCount", 0) for cs in init_statuses)
    if not initializing:
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            state = cs.get("state") or {}
            if state.get("waiting") and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated") and state["terminated"].get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                t = state["terminated"]
                reason = f"Signal:{t['signal']}" if t.get("signal") else \
                    f"ExitCode:{t.get('exitCode')}"
            elif state.get("running") and cs.get("ready"):
                has_running = True
                ready += 1
            elif state.get("running"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
        if has_running and reason not in ("Running",) and st.get("phase") == "Running" \
                and ready == total:
            reason = "Running"
    else:
        for cs in st.get("containerStatuses") or []:
            restarts += cs.get("restartCount", 0)
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason, restarts, f"{ready}/{total}"


def _pod_row(pod: Obj) -> List[Any]:
    status, restarts, ready = pod_status_text(pod)
    st = pod.get("status") or {}
    gates = pod["spec"].get("readinessGates") or []
    return [pod["metadata"]["name"], ready, status, restarts,
            _age(pod["metadata"].get("creationTimestamp", "")),
            st.get("podIP") or "<none>", pod["spec"].get("nodeName") or "<none>",
            st.get("nominatedNodeName") or "<none>",
            "<none>" if not gates else f"0/{len(gates)}"]


def _containers(obj: Obj) -> Tuple[str, str]:
    cs = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(c["name"] for c in cs), ",".join(c.get("image", "") for c in cs)


def _selector(obj: Obj) -> str:
    ml = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in ml.items()) or "<none>"


def _node_row(node: Obj) -> List[Any]:
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    if node["spec"].get("unschedulable"):
        status += ",SchedulingDisabled"
    info = (node.get("status") or {}).get("nodeInfo") or {}
    ip = next((a["address"] for a in (node.get("status") or {}).get("addresses") or []
               if a["type"] == "InternalIP"), "<none>")
    return [node["metadata"]["name"], status, "<none>",
            _age(node["metadata"].get("creationTimestamp", "")), info.get("kubeletVersion", ""),
            ip, "<none>", info.get("osImage", ""), info.get("kernelVersion", ""),
            info.get("containerRuntimeVersion", "")]


def _deploy_row(d: Obj) -> List[Any]:
    st = d.get("status") or {}
    c, i = _containers(d)
    return [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
            _age(d["metadata"].get("creationTimestamp", "")), c, i, _selector(d)]


def _rs_row(r: Obj) -> List[Any]:
    st = r.get("status") or {}
    c, i = _containers(r)
    return [r["metadata"]["name"], r["spec"].get("replicas", 1), st.get("replicas", 0),
            st.get("readyReplicas", 0), _age(r["metadata"].get("creationTimestamp", "")),
            c, i, _selector(r)]


def _ds_row(d: Obj) -> List[Any]:
    st = d.get("status") or {}
    c, i = _containers(d)
    sel = ((d["spec"].get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [d["metadata"]["name"], st.get("desiredNumberScheduled", 0),
            st.get("currentNumberScheduled", 0), st.get("numberReady", 0),
            st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
            _age(d["metadata"].get("creationTimestamp", "")), c, i, _selector(d)]


def _sts_row(s: Obj) -> List[Any]:
    st = s.get("status") or {}
    c, i = _containers(s)
    return [s["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{s['spec'].get('replicas', 1)}",
            _age(s["metadata"].get("creationTimestamp", "")), c, i]


def _ns_row(n: Obj) -> List[Any]:
    return [n["metadata"]["name"], (n.get("status") or {}).get("phase", "Active"),
            _age(n["metadata"].get("creationTimestamp", ""))]


def _cm_row(c: Obj) -> List[Any]:
    return [c["metadata"]["name"], len(c.get("data") or {}) + len(c.get("binaryData") or {}),
            _age(c["metadata"].get("creationTimestamp", ""))]


def _event_row(e: Obj) -> List[Any]:
    inv = e.get("involvedObject") or {}
    return [_age(e.get("lastTimestamp", "")), e.get("type", ""), e.get("reason", ""),
            f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}", e.get("message", "")]


def _generic_row(o: Obj) -> List[Any]:
    return [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp", ""))]


PRINTERS = {
    "pods": ([col("Name", fmt="name"), col("Ready"), col("Status"), col("Restarts", "string"),
              col("Age"), col("IP", priority=1), col("Node", priority=1),
              col("Nominated Node", priority=1), col("Readiness Gates", priority=1)], _pod_row),
    "nodes": ([col("Name", fmt="name"), col("Status"), col("Roles"), col("Age"), col("Version"),
               col("Internal-IP", priority=1), col("External-IP", priority=1),
               col("OS-Image", priority=1), col("Kernel-Version", priority=1),
               col("Container-Runtime", priority=1)], _node_row),
    "deployments": ([col("Name", fmt="name"), col("Ready"), col("Up-to-date", "integer"),
                     col("Available", "integer"), col("Age"), col("Containers", priority=1),
                     col("Images", priority=1), col("Selector", priority=1)], _deploy_row),
    "replicasets": ([col("Name", fmt="name"), col("Desired", "integer"),
                     col("Current", "integer"), col("Ready", "integer"), col("Age"),
                     col("Containers", priority=1), col("Images", priority=1),
                     col("Selector", priority=1)], _rs_row),
    "daemonsets": ([col("Name", fmt="name"), col("Desired", "integer"),
                    col("Current", "integer"), col("Ready", "integer"),
                    col("Up-to-date", "integer"), col("Available", "integer"),
                    col("Node Selector"), col("Age"), col("Containers", priority=1),
                    col("Images", priority=1), col("Selector", priority=1)], _ds_row),
    "statefulsets": ([col("Name", fmt="name"), col("Ready"), col("Age"),
                      col("Containers", priority=1), col("Images", priority=1)], _sts_row),
    "namespaces": ([col("Name", fmt="name"), col("Status"), col("Age")], _ns_row),
    "events": ([col("Last Seen"), col("Type"), col("Reason"), col("Object"), col("Message")],
               _event_row),
    "configmaps": ([col("Name", fmt="name"), col("Data", "integer"), col("Age")], _cm_row),
}


def partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def to_table(resource: str, items: List[Obj], rv: str, include_object: str) -> Obj:
    cols, row = PRINTERS.get(resource, ([col("Name", fmt="name"), col("Age")], _generic_row))
    rows = []
    for it in items:
        entry: Obj = {"cells": row(it)}
        if include_object == "Object":
            entry["object"] = it
        elif include_object != "None":
            entry["object"] = partial(it)
        rows.append(entry)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": cols, "rows": rows}
