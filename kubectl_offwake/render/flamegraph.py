"""The off-wake chain flame graph model shared by the SVG and HTML renderers.

Every classified wakeup becomes one path from the root, weighted by its off-CPU time
(``total_us``), in the order an on-call engineer asks the questions:

    all
    └ category                    why was the thread woken (DESIGN.md §3.4 id)
      └ target thread             who slept (comm; `comm (ns/pod)` when several pods are traced)
        └ target stack, root→leaf where it slept (user frames, then kernel frames)
          └ --                    separator, as in BCC offwaketime / flamegraph.pl chain graphs
            └ waker stack, leaf→root  what the waker was doing (kernel frames, then user frames)
              └ waker name        who woke it (`ns/pod/container [comm]`, `host: kubelet`, ...)

Putting the category first (unlike ``offwaketime -f``, which starts at the target) gives the
answer "where did the time go" at the bottom of the graph: one wide frame per category.
A preemption has no waker: its chain ends ``-- → preempted by: NAME`` (or ``preempted``).

Siblings are ordered alphabetically (by name, then kind), as ``flamegraph.pl`` does after
sorting its folded input, so the same report always gives the same picture. Frames
narrower than a minimum fraction of the total are cut with everything above them; the layout
counts what it cut so the renderers can say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..analysis.report import Party, Report, Wakeup

# Frame kinds: the renderers colour by kind.
ROOT = "root"
CATEGORY = "category"
THREAD = "thread"
TARGET_USER = "target-user"
TARGET_KERNEL = "target-kernel"
TARGET_FRAME = "target-frame"  # the source did not mark where kernel frames end
SEPARATOR = "separator"
WAKER_KERNEL = "waker-kernel"
WAKER_USER = "waker-user"
WAKER_FRAME = "waker-frame"
WAKER = "waker"  # the waker's (or preemptor's) name, the top of a chain

#: Kinds that belong to the waker side of a chain (drawn in cool colours).
WAKER_KINDS = frozenset({SEPARATOR, WAKER_KERNEL, WAKER_USER, WAKER_FRAME, WAKER})

SEPARATOR_NAME = "--"
ROOT_NAME = "all"
NO_STACK = "[no stack]"


@dataclass
class Node:
    """One frame of the merged tree; ``value`` is the off-CPU µs of every path through it."""

    name: str
    kind: str
    value: int = 0
    category: Optional[str] = None
    children: Dict[Tuple[str, str], Node] = field(default_factory=dict)

    def child(self, name: str, kind: str, category: Optional[str]) -> Node:
        key = (name, kind)
        found = self.children.get(key)
        if found is None:
            found = Node(name, kind, category=category)
            self.children[key] = found
        return found

    def sorted_children(self) -> List[Node]:
        return [self.children[k] for k in sorted(self.children)]


@dataclass(frozen=True)
class Rect:
    """A laid-out frame. ``x`` and ``width`` are in µs (offset from the left edge of the
    root); the renderers scale them to pixels. ``depth`` 0 is the root."""

    name: str
    kind: str
    depth: int
    x: int
    width: int
    category: Optional[str] = None


@dataclass
class Layout:
    rects: List[Rect]  # depth-first, siblings in alphabetical order
    total_us: int
    max_depth: int
    elided_frames: int = 0  # frames cut for being narrower than the minimum
    elided_us: int = 0  # off-CPU time under the cut frames (top-most cut frames, no overlap)
    min_us: float = 0.0  # the cut-off that was applied


def thread_label(target: Party, several_pods: bool) -> str:
    """The target thread's frame: its comm, plus the pod when the report spans pods."""
    if several_pods and target.pod:
        return f"{target.comm} ({target.pod})"
    return target.comm


def waker_label(party: Party) -> str:
    """The waker's frame: its display name, plus the thread's comm when the name hides it."""
    name = party.name or party.comm
    if party.comm and party.comm not in name:
        return f"{name} [{party.comm}]"
    return name


def chain(wakeup: Wakeup, several_pods: bool) -> List[Tuple[str, str]]:
    """The (name, kind) frames of one wakeup's path above the root."""
    frames: List[Tuple[str, str]] = [(wakeup.category, CATEGORY),
                                      (thread_label(wakeup.target, several_pods), THREAD)]
    target_stack = wakeup.edge.target_stack
    frames.extend(_stack_frames(target_stack.frames, target_stack.kernel_depth,
                                target_stack.missing, target=True))
    frames.append((SEPARATOR_NAME, SEPARATOR))
    if wakeup.waker is not None:
        stack = wakeup.edge.waker_stack
        if stack is not None:
            frames.extend(_stack_frames(stack.frames, stack.kernel_depth, stack.missing,
                                        target=False))
        else:
            frames.append((NO_STACK, WAKER_FRAME))
        frames.append((waker_label(wakeup.waker), WAKER))
    elif wakeup.preempted_by is not None:
        frames.append((f"preempted by: {waker_label(wakeup.preempted_by)}", WAKER))
    else:
        frames.append(("preempted" if wakeup.edge.preempted else "[no waker]", WAKER))
    return frames


def _stack_frames(frames: Sequence[str], kernel_depth: Optional[int], missing: Optional[str],
                  target: bool) -> List[Tuple[str, str]]:
    """Leaf-first frames → chain frames: target stacks root→leaf, waker stacks leaf→root.

    Without a kernel/user boundary (BCC text without ``-d``) the frames are of the plain
    target/waker kind: the picture must not claim a boundary the source never gave.
    A half the tracer failed to capture shows as a ``[user stack missing]`` frame at the
    root end, so a cut-off stack is not mistaken for a kernel thread's.
    """
    plain = TARGET_FRAME if target else WAKER_FRAME
    if not frames:
        return [(NO_STACK if not missing else f"[{missing} stack missing]", plain)]
    if kernel_depth is None:
        tagged = [(f, plain) for f in frames]
    else:
        kernel_kind, user_kind = ((TARGET_KERNEL, TARGET_USER) if target
                                  else (WAKER_KERNEL, WAKER_USER))
        tagged = [(f, kernel_kind if i < kernel_depth else user_kind)
                  for i, f in enumerate(frames)]
    if missing:
        tagged.append((f"[{missing} stack missing]", plain))
    if target:
        tagged.reverse()
    return tagged


def build_tree(report: Report) -> Node:
    """Merge every wakeup's chain into one tree weighted by off-CPU µs."""
    pods = {w.target.pod for w in report.wakeups if w.target.pod}
    several_pods = len(pods) > 1
    root = Node(ROOT_NAME, ROOT)
    for wakeup in report.wakeups:
        value = wakeup.edge.total_us
        if value <= 0:
            continue
        root.value += value
        node = root
        for name, kind in chain(wakeup, several_pods):
            node = node.child(name, kind, wakeup.category)
            node.value += value
    return root


def layout(root: Node, min_fraction: float = 0.0, max_frames: Optional[int] = None) -> Layout:
    """Place every frame; drop frames narrower than ``min_fraction`` of the root.

    ``max_frames`` raises the cut-off until at most that many frames remain (a busy trace
    can have hundreds of thousands, and the file must stay small enough to attach and
    open). A frame is never wider than its parent, so keeping "every frame at least this
    wide" keeps whole subtrees intact and the cut is exact.
    Iterative so a deep chain (two 127-frame stacks) never meets the recursion limit.
    """
    total = root.value
    min_us = total * min_fraction
    if max_frames is not None:
        values = sorted(_values(root), reverse=True)
        if len(values) > max_frames:
            min_us = max(min_us, values[max_frames] + 1)
    rects: List[Rect] = []
    elided_frames = 0
    elided_us = 0
    max_depth = 0
    # (node, depth, x); pushed in reverse so pops come out in alphabetical order
    todo: List[Tuple[Node, int, int]] = [(root, 0, 0)]
    while todo:
        node, depth, x = todo.pop()
        if depth > 0 and (node.value <= 0 or node.value < min_us):
            elided_frames += _count(node)
            elided_us += node.value
            continue
        rects.append(Rect(node.name, node.kind, depth, x, node.value, node.category))
        max_depth = max(max_depth, depth)
        placed: List[Tuple[Node, int, int]] = []
        offset = x
        for child in node.sorted_children():
            placed.append((child, depth + 1, offset))
            offset += child.value
        todo.extend(reversed(placed))
    return Layout(rects, total, max_depth, elided_frames, elided_us, min_us)


def _values(root: Node) -> List[int]:
    """Every frame's value below the root."""
    found: List[int] = []
    todo = list(root.children.values())
    while todo:
        node = todo.pop()
        found.append(node.value)
        todo.extend(node.children.values())
    return found


def _count(node: Node) -> int:
    count = 0
    todo = [node]
    while todo:
        current = todo.pop()
        count += 1
        todo.extend(current.children.values())
    return count


def flame_layout(report: Report, min_fraction: float = 0.0,
                 max_frames: Optional[int] = None) -> Layout:
    """The report's chain flame graph, laid out."""
    return layout(build_tree(report), min_fraction, max_frames)
