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

import itertools
from dataclasses import dataclass
from itertools import repeat
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..analysis.model import Stack
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

#: A frame of a chain: (name, kind).
Frame = Tuple[str, str]
SEPARATOR_FRAME: Frame = (SEPARATOR_NAME, SEPARATOR)
NO_STACK_FRAME: Frame = (NO_STACK, WAKER_FRAME)


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


def chain(wakeup: Wakeup, several_pods: bool) -> List[Frame]:
    """The (name, kind) frames of one wakeup's path above the root."""
    frames = [(wakeup.category, CATEGORY), (thread_label(wakeup.target, several_pods), THREAD)]
    frames += _stack_part(wakeup.edge.target_stack, True)
    frames.append(SEPARATOR_FRAME)
    stack, has_waker, top = _tail_source(wakeup)
    if stack is not None:
        frames += _stack_part(stack, False)
    elif has_waker:
        frames.append(NO_STACK_FRAME)
    frames.append((top, WAKER))
    return frames


def _tail_source(wakeup: Wakeup) -> Tuple[Optional[Stack], bool, str]:
    """What the chain above ``--`` is made of: the waker stack (``None`` when there is
    none), whether there is a waker at all, and the top frame's name."""
    if wakeup.waker is not None:
        return wakeup.edge.waker_stack, True, waker_label(wakeup.waker)
    if wakeup.preempted_by is not None:
        return None, False, f"preempted by: {waker_label(wakeup.preempted_by)}"
    return None, False, "preempted" if wakeup.edge.preempted else "[no waker]"


def _stack_part(stack: Stack, target: bool) -> List[Frame]:
    return _stack_frames(stack.frames, stack.kernel_depth, stack.missing, target)


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
        tagged = list(zip(frames, repeat(plain)))
    else:
        kernel_kind, user_kind = ((TARGET_KERNEL, TARGET_USER) if target
                                  else (WAKER_KERNEL, WAKER_USER))
        tagged = list(zip(frames, chain_kinds(kernel_kind, kernel_depth, user_kind)))
    if missing:
        tagged.append((f"[{missing} stack missing]", plain))
    if target:
        tagged.reverse()
    return tagged


def chain_kinds(first: str, count: int, rest: str) -> Iterator[str]:
    """``count`` times ``first``, then ``rest`` for ever (zip stops it)."""
    return itertools.chain(repeat(first, count), repeat(rest))


# ------------------------------------------------------------------------------ layout
#
# A busy trace has ~100k chains of ~60 frames each, and after the cut-off only a few
# thousand frames are drawn. Merging every chain frame by frame into a tree of objects
# (millions of them) is what made big reports slow and memory-hungry, so the layout works
# on the chains as sorted keys instead, the way flamegraph.pl and inferno merge sorted
# folded lines:
#
# - Every distinct (name, kind) frame gets a rank in sibling order, and a chain becomes one
#   integer: its ranks as fixed-width digits, left-aligned. Integer order is then the
#   depth-first, alphabetical order of the flame graph, and equal chains merge exactly.
# - Two neighbours in that order share as many frames as their keys share leading digits
#   (one XOR and ``bit_length``), and the frames a chain shares with no neighbour are its
#   own. The merged tree is then the chains' LCP-interval tree: one segment per run of frames
#   with the same set of chains below, so every frame of a segment has the same width and
#   the tree has fewer than two segments per chain, however deep the stacks.
# - A frame's x is the summed width of every chain sorted before it, its width the summed
#   width of the chains below it: prefix sums. Only the frames that survive the cut-off are
#   materialised as rectangles.


class _Segment:
    """Frames ``bottom..top`` (depths; ``bottom`` is the parent's ``top`` + 1) shared by the
    sorted chains ``lo..hi-1`` and no others. A leaf (``children is None``) is one chain's
    own frames."""

    __slots__ = ("top", "lo", "hi", "children")

    def __init__(self, top: int, lo: int, hi: int,
                 children: Optional[List[_Segment]]) -> None:
        self.top = top
        self.lo = lo
        self.hi = hi
        self.children = children


@dataclass
class _Chains:
    """The report's distinct chains in flame-graph order, with what the layout needs.

    A chain is a head (category, thread, target stack part, ``--``) and a tail (waker
    stack part, waker name); stack parts are built once per stack, however many chains
    share them.
    """

    parts: List[List[Frame]]  # distinct stack parts (a stack as target or as waker)
    heads: List[Tuple[Frame, Frame, int]]  # (category, thread, target part)
    tails: List[Tuple[int, Frame]]  # (waker part or -1, top frame)
    head: List[int]  # per sorted chain: index into heads
    tail: List[int]  # per sorted chain: index into tails
    length: List[int]  # per sorted chain: frames above the root
    shared: List[int]  # per sorted chain: frames shared with the previous one (0 for the first)
    offset: List[int]  # prefix sums of the weights: chain k spans [offset[k], offset[k + 1])

    def frame(self, k: int, depth: int) -> Frame:
        """Frame ``depth`` (1 = the category) of sorted chain ``k``."""
        category, thread, part = self.heads[self.head[k]]
        if depth <= 2:
            return category if depth == 1 else thread
        i = depth - 3
        frames = self.parts[part]
        if i < len(frames):
            return frames[i]
        if i == len(frames):
            return SEPARATOR_FRAME
        i -= len(frames) + 1
        part, top = self.tails[self.tail[k]]
        if part >= 0 and i < len(self.parts[part]):
            return self.parts[part][i]
        return top


def _chains(report: Report) -> _Chains:
    """Every wakeup's chain from shared parts, encoded as a key, merged and sorted."""
    several_pods = len({w.target.pod for w in report.wakeups if w.target.pod}) > 1
    parts: List[List[Frame]] = [[NO_STACK_FRAME]]
    part_ids: Dict[Tuple[int, bool], int] = {}
    heads: List[Tuple[Frame, Frame, int]] = []
    tails: List[Tuple[int, Frame]] = []
    pairs: Dict[Tuple[int, int], int] = {}

    def part_of(stack: Stack, target: bool) -> int:
        key = (id(stack), target)  # stacks are interned; equal copies only cost a part
        found = part_ids.get(key)
        if found is None:
            found = part_ids[key] = len(parts)
            parts.append(_stack_part(stack, target))
        return found

    # Heads and tails are looked up by the identity of what makes them (parties and stacks
    # are shared objects), so the labels are built once per distinct head or tail; equal
    # chains reached through different objects still merge below, by their keys.
    head_ids: Dict[Tuple[str, int, int], int] = {}
    tail_ids: Dict[Tuple[int, int, bool], int] = {}
    for wakeup in report.wakeups:
        edge = wakeup.edge
        value = edge.total_us
        if value <= 0:
            continue
        head_key = (wakeup.category, id(wakeup.target), id(edge.target_stack))
        h = head_ids.get(head_key)
        if h is None:
            h = head_ids[head_key] = len(heads)
            heads.append(((wakeup.category, CATEGORY),
                          (thread_label(wakeup.target, several_pods), THREAD),
                          part_of(edge.target_stack, True)))
        waker = wakeup.waker
        tail_key = ((id(edge.waker_stack), id(waker), True) if waker is not None
                    else (id(wakeup.preempted_by), 0, edge.preempted))
        t = tail_ids.get(tail_key)
        if t is None:
            t = tail_ids[tail_key] = len(tails)
            stack, has_waker, top = _tail_source(wakeup)
            tails.append((part_of(stack, False) if stack is not None
                          else (0 if has_waker else -1), (top, WAKER)))
        pair = (h, t)
        pairs[pair] = pairs.get(pair, 0) + value

    distinct = {SEPARATOR_FRAME}
    for frames in parts:
        distinct.update(frames)
    for category, thread, _part in heads:
        distinct.add(category)
        distinct.add(thread)
    distinct.update(top for _part, top in tails)
    width = max(1, (len(distinct).bit_length() + 7) // 8)  # rank 0 pads short chains
    digit = {frame: i.to_bytes(width, "big")
             for i, frame in enumerate(sorted(distinct), start=1)}
    bits = 8 * width
    part_bytes = [b"".join(map(digit.__getitem__, frames)) for frames in parts]
    separator = digit[SEPARATOR_FRAME]
    head_bytes = [digit[c] + digit[t] + part_bytes[p] + separator for c, t, p in heads]
    head_lens = [len(parts[p]) + 3 for _c, _t, p in heads]
    tail_bytes = [(part_bytes[p] if p >= 0 else b"") + digit[top] for p, top in tails]
    tail_lens = [(len(parts[p]) if p >= 0 else 0) + 1 for p, _top in tails]
    longest = max((head_lens[h] + tail_lens[t] for h, t in pairs), default=0)
    merged: Dict[int, List[int]] = {}  # equal chains (two threads of one comm) add up
    for (h, t), value in pairs.items():
        length = head_lens[h] + tail_lens[t]
        key = int.from_bytes(head_bytes[h] + tail_bytes[t], "big") << (
            bits * (longest - length))
        entry = merged.get(key)
        if entry is None:
            merged[key] = [value, h, t, length]
        else:
            entry[0] += value
    keys = sorted(merged)
    entries = [merged[key] for key in keys]
    total_bits = bits * longest
    shared = [0] + [(total_bits - (a ^ b).bit_length()) // bits
                    for a, b in zip(keys, keys[1:])]
    offset = [0, *itertools.accumulate(entry[0] for entry in entries)]
    return _Chains(parts, heads, tails, [e[1] for e in entries], [e[2] for e in entries],
                   [e[3] for e in entries], shared, offset)


def _segments(chains: _Chains) -> _Segment:
    """The LCP-interval tree of the sorted chains (one pass, a stack of open segments)."""
    n = len(chains.length)
    root = _Segment(0, 0, n, [])
    open_: List[_Segment] = [root]
    for k in range(1, n + 1):
        shared = chains.shared[k] if k < n else 0  # frames chain k-1 shares with chain k
        top = open_[-1]
        length = chains.length[k - 1]
        leaf = _Segment(length, k - 1, k, None)
        if shared > top.top:  # chain k-1 and k share more than k-1 shares with k-2
            open_.append(_Segment(shared, k - 1, n, [leaf] if length > shared else []))
            continue
        if length > top.top:  # (a chain that is a prefix of another has no frames of its own)
            assert top.children is not None
            top.children.append(leaf)
        last: Optional[_Segment] = None
        while shared < open_[-1].top:
            last = open_.pop()
            last.hi = k
            parent = open_[-1]
            if shared <= parent.top:
                assert parent.children is not None
                parent.children.append(last)
                last = None
        if shared > open_[-1].top:
            assert last is not None
            open_.append(_Segment(shared, last.lo, n, [last]))
    return root


def _walk(root: _Segment) -> List[Tuple[_Segment, int]]:
    """Every segment below the root with its parent's top depth, depth-first."""
    found: List[Tuple[_Segment, int]] = []
    todo = [(child, 0) for child in reversed(root.children or [])]
    while todo:
        segment, base = todo.pop()
        found.append((segment, base))
        if segment.children:
            todo.extend((child, segment.top) for child in reversed(segment.children))
    return found


def flame_layout(report: Report, min_fraction: float = 0.0,
                 max_frames: Optional[int] = None) -> Layout:
    """The report's chain flame graph, laid out; frames narrower than ``min_fraction`` of
    the root are dropped with everything above them.

    ``max_frames`` raises the cut-off until at most that many frames remain (a busy trace
    can have hundreds of thousands, and the file must stay small enough to attach and
    open). A frame is never wider than its parent, so keeping "every frame at least this
    wide" keeps whole subtrees intact and the cut is exact.
    Iterative so a deep chain (two 127-frame stacks) never meets the recursion limit.
    """
    chains = _chains(report)
    offset = chains.offset
    total = offset[-1]
    min_us: float = total * min_fraction
    frames = sum(chains.length) - sum(chains.shared)  # distinct frames below the root
    root = _segments(chains)
    if max_frames is not None and frames > max_frames:
        sizes = sorted(((offset[s.hi] - offset[s.lo], s.top - base)
                        for s, base in _walk(root)), reverse=True)
        seen = 0
        for value, count in sizes:  # the (max_frames + 1)-th widest frame
            seen += count
            if seen > max_frames:
                min_us = max(min_us, value + 1)
                break
    rects = [Rect(ROOT_NAME, ROOT, 0, 0, total, None)]
    elided_us = 0
    max_depth = 0
    todo = [(child, 0) for child in reversed(root.children or [])]
    while todo:
        segment, base = todo.pop()
        lo = segment.lo
        value = offset[segment.hi] - offset[lo]
        if value <= 0 or value < min_us:
            elided_us += value
            continue
        category = chains.frame(lo, 1)[0]
        for depth in range(base + 1, segment.top + 1):
            name, kind = chains.frame(lo, depth)
            rects.append(Rect(name, kind, depth, offset[lo], value, category))
        max_depth = max(max_depth, segment.top)
        if segment.children:
            todo.extend((child, segment.top) for child in reversed(segment.children))
    return Layout(rects, total, max_depth, frames - (len(rects) - 1), elided_us, min_us)
