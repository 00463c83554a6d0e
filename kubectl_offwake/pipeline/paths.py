"""Where a run's files go: its recordings (one per node) and its reports (one per pod)."""

from __future__ import annotations

import os
import re
import time
from typing import Dict, List


def default_save_path(label: str) -> str:
    """``offwake-LABEL-TIME.jsonl.gz`` in the working directory, for a local run."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "trace"
    return f"offwake-{safe}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl.gz"


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
