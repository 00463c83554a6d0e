"""Naming wakers with the API: host processes → pod and container (docs/design.md §5).

The collector knows each process's container id and pod UID (from its cgroup); the API
knows which pod and container those are. The result is ``identity`` wire records that
the client appends to the recording, so a saved recording carries the names too:
``ns/pod/container`` for a pod's process, ``host: COMM`` for a process of no pod,
``kernel: COMM`` for a kernel thread.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from ..analysis.model import ProcessInfo
from .targets import split_container_id


def _norm_uid(uid: Optional[str]) -> str:
    # systemd cgroup driver spells pod UIDs with underscores (kubepods-pod<uid_with_>.slice)
    return (uid or "").replace("_", "-").lower()


def _norm_cid(cid: Optional[str]) -> str:
    return split_container_id(cid or "")[1].lower()


def pod_index(pods: Iterable[dict]) -> Tuple[Dict[str, Tuple[str, str]], Dict[str, str]]:
    """(container id → (pod "ns/name", container name), pod uid → "ns/name")."""
    by_cid: Dict[str, Tuple[str, str]] = {}
    by_uid: Dict[str, str] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        ref = f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
        if meta.get("uid"):
            by_uid[_norm_uid(meta["uid"])] = ref
        status = pod.get("status") or {}
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for item in status.get(key) or []:
                if item.get("containerID"):
                    by_cid[_norm_cid(item["containerID"])] = (ref, item.get("name", "?"))
                last = ((item.get("lastState") or {}).get("terminated") or {}).get("containerID")
                if last:  # a restarted container's previous id: its processes may linger
                    by_cid.setdefault(_norm_cid(last), (ref, item.get("name", "?")))
    return by_cid, by_uid


def identity_for(process: ProcessInfo, by_cid: Dict[str, Tuple[str, str]],
                 by_uid: Dict[str, str], node: Optional[str]) -> dict:
    """The ``identity`` record of a process the collector described."""
    comm = process.comm or "?"
    out: dict = {"type": "identity", "pid": process.pid}
    if node:
        out["node"] = node
    if process.kernel_thread:
        out["label"] = f"kernel: {comm}"
        return out
    cid = _norm_cid(process.container_id)
    if cid and cid in by_cid:
        pod, container = by_cid[cid]
        out.update(pod=pod, container=container, label=f"{pod}/{container}")
        return out
    uid = _norm_uid(process.pod_uid)
    if uid and uid in by_uid:
        out.update(pod=by_uid[uid], label=by_uid[uid])
        return out
    out["label"] = f"host: {comm}"
    return out


def identities(processes: Iterable[ProcessInfo], pods: Iterable[dict],
               node: Optional[str]) -> List[dict]:
    """``identity`` records for every process of a recording."""
    by_cid, by_uid = pod_index(pods)
    return [identity_for(process, by_cid, by_uid, node) for process in processes]
