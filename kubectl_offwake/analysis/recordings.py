"""Recordings of a run over several nodes: one per pod, and one merged.

Pure model surgery. A node's recording covers every target on that node; a pod's report is
that recording cut down to the pod's target processes, and the merged report joins the
nodes. Process ids are per node, so when two nodes happen to use the same pid, the merged
recording keeps the details of the one that describes a traced process and says so in a
warning rather than mixing them silently.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Set

from .model import Recording


def target_pods(recording: Recording) -> Dict[str, Set[int]]:
    """Pod ("ns/name") → the target pids in it, as named by ``identity`` records."""
    out: Dict[str, Set[int]] = {}
    for target in recording.targets:
        info = recording.processes.get(target.pid)
        if info is not None and info.pod:
            out.setdefault(info.pod, set()).add(target.pid)
    return out


def only_pids(recording: Recording, pids: Set[int], pod: str) -> Recording:
    """A copy of ``recording`` keeping only what concerns the target processes ``pids``."""
    return replace(
        recording,
        source={**recording.source, "pod": pod},
        targets=[t for t in recording.targets if t.pid in pids],
        edges=[e for e in recording.edges if e.target.pid in pids],
        oncpu=[o for o in recording.oncpu if o.task.pid in pids],
        pending=[p for p in recording.pending if p.task.pid in pids],
        throttling=[t for t in recording.throttling if t.pid is None or t.pid in pids],
        envoy_stats=[s for s in recording.envoy_stats if s.pid in pids],
        warnings=list(recording.warnings),
        logs=list(recording.logs),
        failures=dict(recording.failures),  # the node's failure is the pod's too
    )


def split_by_pod(recording: Recording) -> Dict[str, Recording]:
    return {pod: only_pids(recording, pids, pod)
            for pod, pids in sorted(target_pods(recording).items())}


def merge(recordings: List[Recording], nodes: Optional[List[str]] = None) -> Recording:
    """One recording for the whole run (the first one's stack table is shared)."""
    if len(recordings) == 1:
        return recordings[0]
    first = recordings[0]
    merged = Recording(stacks=first.stacks)
    merged.source = dict(first.source)
    if nodes:
        merged.source["nodes"] = list(nodes)
        merged.source["node"] = ", ".join(nodes)
    collided = 0
    target_pids: Set[int] = set()
    for rec in recordings:
        own_targets = {t.pid for t in rec.targets}
        for pid, info in rec.processes.items():
            old = merged.processes.get(pid)
            if old is not None and old is not info:
                collided += 1
                # keep what describes a traced thread: targets first, then named ones
                better = (pid in own_targets and pid not in target_pids) or \
                    (pid not in target_pids and not old.pod and bool(info.pod))
                if not better:
                    continue
            merged.processes[pid] = info
        target_pids |= own_targets
        merged.targets.extend(rec.targets)
        merged.edges.extend(rec.edges)
        merged.oncpu.extend(rec.oncpu)
        merged.pending.extend(rec.pending)
        merged.throttling.extend(rec.throttling)
        merged.envoy_stats.extend(rec.envoy_stats)
        _add_counts(merged.totals, rec.totals)
        _add_counts(merged.lost, rec.lost)
        merged.warnings.extend(w for w in rec.warnings if w not in merged.warnings)
        merged.logs.extend(rec.logs)
        merged.failures.update(rec.failures)
    if collided:
        merged.warnings.append(
            f"{collided} process id(s) occur on more than one node; the merged report names "
            "them after the first node (the per-pod reports are exact)")
    return merged


def _add_counts(into: Dict[str, int], more: Dict[str, int]) -> None:
    for key, value in more.items():
        if isinstance(value, int):
            into[key] = into.get(key, 0) + value
