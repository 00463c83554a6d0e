"""``--format speedscope``: a file for https://www.speedscope.app (its file-format schema).

One "sampled" profile per wakeup category, largest first, so the profile picker reads like
the terminal table; every distinct (waker stack, target stack) is one sample whose weight
is its off-CPU time in microseconds. Frames are shared between profiles.

A sample is a wake chain, root first, as ``flamegraph.pl --colors=chain`` draws it: the
target thread, its user frames root..leaf, its kernel frames root..leaf, a ``--`` frame,
then the waker's kernel frames leaf..root, its user frames leaf..root and the waker's name
on top. Reading a flame upward therefore goes "this thread slept here, and was woken by
this code path of this process". Preemptions end in ``--`` and a "preempted by ..." frame.
Kernel frames carry ``file: "[kernel]"`` so speedscope's detail view tells the halves apart.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, TextIO, Tuple

from ..analysis.categories import CATEGORY_BY_ID
from ..analysis.model import Stack
from ..analysis.report import Party, Report, Wakeup
from . import RenderOptions
from .summary import target_names

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
EXPORTER = "kubectl-offwake"
SEPARATOR = "--"
KERNEL_FILE = "[kernel]"

_FrameKey = Tuple[str, Optional[str]]


class _Frames:
    """The shared frame table: one index per distinct (name, file)."""

    def __init__(self) -> None:
        self.index: Dict[_FrameKey, int] = {}
        self.frames: List[Dict[str, str]] = []
        self._stacks: Dict[Tuple[int, bool], List[int]] = {}

    def get(self, name: str, file: Optional[str] = None) -> int:
        key = (name, file)
        found = self.index.get(key)
        if found is None:
            found = len(self.frames)
            self.index[key] = found
            self.frames.append({"name": name, "file": file} if file else {"name": name})
        return found

    def stack(self, stack: Stack, is_target: bool) -> List[int]:
        """Frame indices of a stack's part of a chain (memoised; stacks are interned)."""
        key = (id(stack), is_target)
        found = self._stacks.get(key)
        if found is None:
            depth = len(stack.frames) if stack.kernel_depth is None else stack.kernel_depth
            kernel = [self.get(f, KERNEL_FILE) for f in stack.frames[:depth]]
            user = [self.get(f) for f in stack.frames[depth:]]
            # A target reads root first (user root..leaf, kernel root..leaf); a waker
            # continues upward from the wake (kernel leaf..root, user leaf..root).
            found = user[::-1] + kernel[::-1] if is_target else kernel + user
            self._stacks[key] = found
        return found


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    out.write(json.dumps(speedscope_dict(report, options), ensure_ascii=False,
                         separators=(",", ":")))
    out.write("\n")


def speedscope_dict(report: Report, options: RenderOptions) -> Dict[str, Any]:
    frames = _Frames()
    by_category: Dict[str, List[Wakeup]] = {}
    for wakeup in report.wakeups:
        if wakeup.edge.total_us > 0:
            by_category.setdefault(wakeup.category, []).append(wakeup)
    order = [g.key for g in report.by_category if g.key in by_category]
    order += sorted(set(by_category) - set(order))
    profiles = [_profile(category, by_category[category], frames) for category in order]
    return {
        "$schema": SCHEMA_URL,
        "name": _name(report, options),
        "exporter": EXPORTER,
        "activeProfileIndex": 0,
        "shared": {"frames": frames.frames},
        "profiles": profiles,
    }


def _profile(category: str, wakeups: List[Wakeup], frames: _Frames) -> Dict[str, Any]:
    samples: List[List[int]] = []
    weights: List[int] = []
    for wakeup in wakeups:
        samples.append(_chain(wakeup, frames))
        weights.append(wakeup.edge.total_us)
    known = CATEGORY_BY_ID.get(category)
    return {
        "type": "sampled",
        "name": f"{known.title} ({category})" if known else category,
        "unit": "microseconds",
        "startValue": 0,
        "endValue": sum(weights),
        "samples": samples,
        "weights": weights,
    }


def _chain(wakeup: Wakeup, frames: _Frames) -> List[int]:
    edge = wakeup.edge
    chain = [frames.get(_thread_label(wakeup.target))]
    chain += frames.stack(edge.target_stack, True)
    chain.append(frames.get(SEPARATOR))
    if edge.preempted or wakeup.waker is None or edge.waker_stack is None:
        by = wakeup.preempted_by
        chain.append(frames.get(f"preempted by {by.name}" if by else "preempted"))
    else:
        chain += frames.stack(edge.waker_stack, False)
        chain.append(frames.get(_waker_label(wakeup.waker)))
    return chain


def _thread_label(party: Party) -> str:
    return f"{party.comm} ({party.role})" if party.role else party.comm


def _waker_label(party: Party) -> str:
    """The waker's display name, plus its comm when the name does not already say it."""
    if party.name.endswith(party.comm):
        return party.name
    return f"{party.name} ({party.comm})"


def _name(report: Report, options: RenderOptions) -> str:
    targets = target_names(report)
    return f"{options.title}: {', '.join(targets)}" if targets else options.title
