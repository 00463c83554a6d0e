"""Recordings of a fleet run: one per node as collected, one per pod, one merged.

Pure model surgery (no API here). A node's recording covers every target on that node;
a pod's report is that recording cut down to the pod's target threads, and the merged
report joins the nodes. Process ids are per node, so when two nodes happen to use the
same pid, the merged recording keeps the first node's process details for it and says
so in a warning rather than mixing them silently.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from typing import Dict, Iterable, List, Optional, Set

from ..analysis.model import Recording, Throttling
from ..render import atomic_write_text


def pod_of(recording: Recording, pid: Optional[int]) -> Optional[str]:
    info = recording.processes.get(pid) if pid is not None else None
    return info.pod if info is not None else None


def target_pods(recording: Recording) -> Dict[str, Set[int]]:
    """Pod ("ns/name") → the target pids in it, as named by ``identity`` records."""
    out: Dict[str, Set[int]] = {}
    for target in recording.targets:
        pod = pod_of(recording, target.pid)
        if pod:
            out.setdefault(pod, set()).add(target.pid)
    return out


def only_pids(recording: Recording, pids: Set[int], pod: str) -> Recording:
    """A copy of ``recording`` keeping only what concerns the target pids ``pids``."""
    def keep_task(task: object) -> bool:
        return getattr(task, "pid", None) in pids

    cut = replace(
        recording,
        source={**recording.source, "pod": pod},
        targets=[t for t in recording.targets if t.pid in pids],
        edges=[e for e in recording.edges if keep_task(e.target)],
        oncpu=[o for o in recording.oncpu if keep_task(o.task)],
        pending=[p for p in recording.pending if keep_task(p.task)],
        throttling=[t for t in recording.throttling if t.pid is None or t.pid in pids],
        warnings=list(recording.warnings),
        logs=list(recording.logs),
        failures=dict(recording.failures),  # the node's failure is the pod's too
    )
    return cut


def split_by_pod(recording: Recording) -> Dict[str, Recording]:
    return {pod: only_pids(recording, pids, pod)
            for pod, pids in sorted(target_pods(recording).items())}


def merge(recordings: List[Recording], nodes: Optional[List[str]] = None) -> Recording:
    """One recording for the whole fleet (the first one's stack table is shared)."""
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
        merged.throttling.extend(_copy_throttling(rec.throttling))
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


def _copy_throttling(items: Iterable[Throttling]) -> List[Throttling]:
    return list(items)


def _add_counts(into: Dict[str, int], more: Dict[str, int]) -> None:
    for key, value in more.items():
        if isinstance(value, int):
            into[key] = into.get(key, 0) + value


def recording_paths(base: str, nodes: List[str]) -> Dict[str, str]:
    """Where each node's recording goes: ``base`` for one node, else ``base``+node."""
    if len(nodes) == 1:
        return {nodes[0]: base}
    stem, suffix = _split_suffix(base)
    return {node: f"{stem}-{_safe(node)}{suffix}" for node in nodes}


def report_path(out: str, pod: str) -> str:
    """``incident.html`` + ``app/web-1`` → ``incident.app_web-1.html``."""
    stem, suffix = _split_suffix(out)
    return f"{stem}.{_safe(pod)}{suffix}"


def _split_suffix(path: str) -> tuple[str, str]:
    for suffix in (".jsonl.gz", ".json.gz", ".speedscope.json", ".jsonl"):
        if path.endswith(suffix):
            return path[: -len(suffix)], suffix
    stem, ext = os.path.splitext(path)
    return stem, ext


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


def save_lines(path: str, lines: List[str]) -> None:
    """Write a recording (gzip when the name ends in .gz), atomically."""
    text = "".join(line + "\n" for line in lines)
    if path.endswith(".gz"):
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, f".offwake-{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    else:
        atomic_write_text(path, text)
