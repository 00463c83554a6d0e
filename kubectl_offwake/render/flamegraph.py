"""The off-wake chain flame graph model shared by the SVG and HTML renderers.

Every classified wakeup becomes one path from the root, weighted by its off-CPU time
(``total_us``), in the order an on-call engineer asks the questions:

    all
    └ category                    why was the thread woken (id: docs/design.md §3.4)
      └ target thread             who slept (comm; `comm (ns/pod)` when several pods are traced)
        └ target stack, root→leaf where it slept (user frames, then kernel frames)
          └ --                    separator, as in BCC offwaketime / flamegraph.pl chain graphs
            └ waker stack, leaf→root  what the waker was doing (kernel frames, then user frames)
              └ who woke it       `ns/pod/container (comm)`, `host: kubelet`, `interrupt (timer)`

Putting the category first (unlike ``offwaketime -f``, which starts at the target) gives the
answer "where did the time go" at the bottom of the graph: one wide frame per category.
A preemption has no waker: its chain ends ``-- → preempted by NAME`` (or ``preempted``).
Every label comes from :mod:`..analysis.vocabulary`, so the graph names what the table names.

Siblings are ordered alphabetically (by name, then kind), as ``flamegraph.pl`` does after
sorting its folded input, so the same report always gives the same picture. Frames
narrower than a minimum fraction of the total are cut with everything above them; the layout
counts what it cut so the renderers can say so.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..analysis.classify import CAUSE_INTERRUPT
from ..analysis.model import Stack
from ..analysis.report import Report, Wakeup
from ..analysis.vocabulary import (
    NO_STACK,
    missing_stack,
    spans_pods,
    thread_frame,
    woken_by,
)
from ..analysis.vocabulary import SEPARATOR as SEPARATOR_NAME

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

#: Every kind below the root.
KINDS = (CATEGORY, THREAD, TARGET_USER, TARGET_KERNEL, TARGET_FRAME, SEPARATOR, WAKER_KERNEL,
         WAKER_USER, WAKER_FRAME, WAKER)

ROOT_NAME = "all"

#: A frame of a chain: (name, kind).
Frame = Tuple[str, str]


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


def chain(wakeup: Wakeup, several_pods: bool) -> List[Frame]:
    """The (name, kind) frames of one wakeup's path above the root."""
    frames = [(wakeup.category, CATEGORY), (thread_frame(wakeup.target, several_pods), THREAD)]
    frames += _frames(stack_runs(wakeup.edge.target_stack, True))
    frames.append((SEPARATOR_NAME, SEPARATOR))
    stack, has_waker, top = _tail_source(wakeup)
    if stack is not None:
        frames += _frames(stack_runs(stack, False))
    elif has_waker:
        frames.append((NO_STACK, WAKER_FRAME))
    frames.append((top, WAKER))
    return frames


def _tail_source(wakeup: Wakeup) -> Tuple[Optional[Stack], bool, str]:
    """What the chain above ``--`` is made of: the waker stack (``None`` when there is
    none), whether there is a waker at all, and the top frame's name (who woke it)."""
    if wakeup.waker is not None:
        return wakeup.edge.waker_stack, True, woken_by(wakeup)
    return None, False, woken_by(wakeup)


#: Consecutive frames of one kind: (kind, names in chain order).
Run = Tuple[str, Tuple[str, ...]]


def stack_runs(stack: Stack, target: bool) -> List[Run]:
    """A leaf-first stack as chain frames: target stacks root→leaf, waker stacks leaf→root,
    as runs of one kind each (a stack has at most three: user, kernel, missing marker).

    Without a kernel/user boundary (BCC text without ``-d``) the frames are of the plain
    target/waker kind: the picture must not claim a boundary the source never gave.
    A half the tracer failed to capture shows as a ``[user stack missing]`` frame at the
    root end, so a cut-off stack is not mistaken for a kernel thread's.
    """
    plain = TARGET_FRAME if target else WAKER_FRAME
    frames, depth, missing = tuple(stack.frames), stack.kernel_depth, stack.missing
    marker = missing_stack(missing) if missing else NO_STACK
    if not frames:
        return [(plain, (marker,))]
    if depth is None:
        runs = [(plain, frames)]
    else:
        kernel, user = (TARGET_KERNEL, TARGET_USER) if target else (WAKER_KERNEL, WAKER_USER)
        depth = max(depth, 0)
        runs = [(kernel, frames[:depth]), (user, frames[depth:])]
    if missing:
        runs.append((plain, (marker,)))
    if target:
        runs = [(kind, names[::-1]) for kind, names in reversed(runs)]
    return [run for run in runs if run[1]]


def _frames(runs: Sequence[Run]) -> List[Frame]:
    return [(name, kind) for kind, names in runs for name in names]


# ------------------------------------------------------------------------------ layout
#
# A busy trace has ~100k chains of ~60 frames each, and after the cut-off only a few
# thousand frames are drawn. Merging every chain frame by frame into a tree of objects
# (millions of them) is what made big reports slow and memory-hungry, so the layout works
# on the chains as sorted keys instead, the way flamegraph.pl and inferno merge sorted
# folded lines:
#
# - A chain is a head (category, thread, target stack, ``--``) and a tail (waker stack,
#   waker name); each distinct stack is turned into frames once, however many chains
#   share it.
# - Every distinct (name, kind) frame gets a rank in sibling order, and a head or tail
#   becomes one integer: its ranks as fixed-width digits, left-aligned. Integer order is
#   then the depth-first, alphabetical order of the flame graph; chains sort by (head,
#   tail) and equal chains merge exactly.
# - Two neighbours in that order share as many frames as their keys share leading digits
#   (one XOR and ``bit_length``); the frames a chain shares with no neighbour are its
#   own. The merged tree is then the chains' LCP-interval tree: one segment per run of
#   frames with the same chains below, so every frame of a segment has the same width and
#   there are fewer than two segments per chain, however deep the stacks.
# - A frame's x is the summed width of every chain sorted before it, its width the summed
#   width of the chains below it: prefix sums. Only frames that survive the cut-off become
#   rectangles.


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
    """The report's distinct chains in flame-graph order, with what the layout needs."""

    parts: List[List[Run]]  # distinct stacks as chain frames (part 0: "[no stack]")
    part_len: List[int]  # frames per part
    heads: List[Tuple[str, str, int]]  # (category, thread label, target part)
    tails: List[Tuple[int, str]]  # (waker part or -1, top frame's name)
    head: List[int]  # per sorted chain: index into heads
    tail: List[int]  # per sorted chain: index into tails
    length: List[int]  # per sorted chain: frames above the root
    shared: List[int]  # per sorted chain: frames shared with the previous one (0 for the first)
    offset: List[int]  # prefix sums of the weights: chain k spans [offset[k], offset[k + 1])

    def frame(self, k: int, depth: int) -> Frame:
        """Frame ``depth`` (1 = the category) of sorted chain ``k``."""
        category, thread, part = self.heads[self.head[k]]
        if depth <= 2:
            return (category, CATEGORY) if depth == 1 else (thread, THREAD)
        i = depth - 3
        if i < self.part_len[part]:
            return _nth(self.parts[part], i)
        i -= self.part_len[part]
        if i == 0:
            return (SEPARATOR_NAME, SEPARATOR)
        i -= 1
        part, top = self.tails[self.tail[k]]
        if part >= 0 and i < self.part_len[part]:
            return _nth(self.parts[part], i)
        return (top, WAKER)


def _nth(runs: List[Run], i: int) -> Frame:
    for kind, names in runs:
        if i < len(names):
            return (names[i], kind)
        i -= len(names)
    raise IndexError(i)


def _chains(report: Report) -> _Chains:
    """Every wakeup's chain from shared parts, encoded as a key, merged and sorted."""
    several_pods = spans_pods(report.wakeups)
    parts: List[List[Run]] = [[(WAKER_FRAME, (NO_STACK,))]]
    part_ids: Dict[Tuple[int, bool], int] = {}
    heads: List[Tuple[str, str, int]] = []
    tails: List[Tuple[int, str]] = []
    chain_head: List[int] = []
    chain_tail: List[int] = []
    chain_value: List[int] = []

    def part_of(stack: Stack, target: bool) -> int:
        key = (id(stack), target)  # stacks are interned; an equal copy only costs a part
        found = part_ids.get(key)
        if found is None:
            found = part_ids[key] = len(parts)
            parts.append(stack_runs(stack, target))
        return found

    # Heads and tails are looked up by the identity of what makes them (parties and stacks
    # are shared objects), so labels are built once per distinct head or tail; equal chains
    # reached through different objects still merge below, by their ranks.
    head_ids: Dict[Tuple[str, int, int], int] = {}
    tail_ids: Dict[Tuple[int, int, bool, str], int] = {}
    for wakeup in report.wakeups:
        edge = wakeup.edge
        value = edge.total_us
        if value <= 0:
            continue
        head_key = (wakeup.category, id(wakeup.target), id(edge.target_stack))
        h = head_ids.get(head_key)
        if h is None:
            h = head_ids[head_key] = len(heads)
            heads.append((wakeup.category, thread_frame(wakeup.target, several_pods),
                          part_of(edge.target_stack, True)))
        waker = wakeup.waker
        # An interrupt wake is named by what the interrupt did, so the category is part of
        # the tail's identity there.
        tail_key = ((id(edge.waker_stack), id(waker), True,
                     wakeup.category if wakeup.cause == CAUSE_INTERRUPT else "")
                    if waker is not None
                    else (id(wakeup.preempted_by), 0, edge.preempted, wakeup.category))
        t = tail_ids.get(tail_key)
        if t is None:
            t = tail_ids[tail_key] = len(tails)
            stack, has_waker, top = _tail_source(wakeup)
            tails.append((part_of(stack, False) if stack is not None
                          else (0 if has_waker else -1), top))
        chain_head.append(h)
        chain_tail.append(t)
        chain_value.append(value)

    # Ranks: every distinct (name, kind) in sibling order; 0 pads short chains.
    names: Dict[str, Set[str]] = {kind: set() for kind in KINDS}
    names[SEPARATOR].add(SEPARATOR_NAME)
    for runs in parts:
        for kind, run in runs:
            names[kind].update(run)
    names[CATEGORY].update(category for category, _t, _p in heads)
    names[THREAD].update(thread for _c, thread, _p in heads)
    names[WAKER].update(top for _p, top in tails)
    ordered = sorted((name, kind) for kind, found in names.items() for name in found)
    width = max(1, (len(ordered).bit_length() + 7) // 8)
    digits: Dict[str, Dict[str, bytes]] = {kind: {} for kind in KINDS}
    for i, (name, kind) in enumerate(ordered, start=1):
        digits[kind][name] = i.to_bytes(width, "big")

    part_bytes = [b"".join([b"".join(map(digits[kind].__getitem__, run)) for kind, run in runs])
                  for runs in parts]
    part_len = [sum(len(run) for _kind, run in runs) for runs in parts]
    categories, threads, wakers = digits[CATEGORY], digits[THREAD], digits[WAKER]
    separator = digits[SEPARATOR][SEPARATOR_NAME]

    # Keys: a head's digits left-aligned to the longest head, a tail's to the longest
    # tail. Heads end in ``--`` (the only separator-kind frame), so no head is a prefix of
    # another: chains sort by (head, tail), and two chains with different heads share only
    # what their heads share. Heads and tails are ranked once (equal frames, equal rank), so
    # chains sort and merge on small integers.
    head_lens = [part_len[p] + 3 for _c, _t, p in heads]
    tail_lens = [(part_len[p] if p >= 0 else 0) + 1 for p, _top in tails]
    head_width = max(head_lens, default=0)
    tail_width = max(tail_lens, default=0)
    bits = 8 * width
    head_keys = [int.from_bytes(categories[c] + threads[t] + part_bytes[p] + separator, "big")
                 << (bits * (head_width - n)) for (c, t, p), n in zip(heads, head_lens)]
    tail_keys = [int.from_bytes((part_bytes[p] if p >= 0 else b"") + wakers[top], "big")
                 << (bits * (tail_width - n)) for (p, top), n in zip(tails, tail_lens)]
    head_rank = _dense_ranks(head_keys)
    tail_rank = _dense_ranks(tail_keys)
    n_tails = len(tails)
    keys = [head_rank[h] * n_tails + tail_rank[t] for h, t in zip(chain_head, chain_tail)]
    weights: Dict[int, int] = {}
    for key, value in zip(keys, chain_value):  # equal chains (two threads of one comm) add up
        weights[key] = weights.get(key, 0) + value
    where = dict(zip(keys, range(len(keys))))
    keys = sorted(weights)
    first = [where[key] for key in keys]
    head = [chain_head[i] for i in first]
    tail = [chain_tail[i] for i in first]
    length = [head_lens[h] + tail_lens[t] for h, t in zip(head, tail)]
    head_bits = bits * head_width
    tail_bits = bits * tail_width
    shared = [0]
    for h0, h1, t0, t1 in zip(head, head[1:], tail, tail[1:]):
        if head_rank[h0] == head_rank[h1]:
            common = (tail_bits - (tail_keys[t0] ^ tail_keys[t1]).bit_length()) // bits
            shared.append(head_lens[h1] + common)
        else:
            shared.append((head_bits - (head_keys[h0] ^ head_keys[h1]).bit_length()) // bits)
    offset = [0, *itertools.accumulate(weights[key] for key in keys)]
    return _Chains(parts, part_len, heads, tails, head, tail, length, shared, offset)


def _dense_ranks(keys: List[int]) -> List[int]:
    """Each key's rank among the distinct keys (equal keys, equal rank)."""
    ranks = [0] * len(keys)
    rank = -1
    previous = None
    for i in sorted(range(len(keys)), key=keys.__getitem__):
        if keys[i] != previous:
            rank += 1
            previous = keys[i]
        ranks[i] = rank
    return ranks


def _segments(chains: _Chains) -> Tuple[_Segment, List[Tuple[int, int]]]:
    """The LCP-interval tree of the sorted chains (one pass, a stack of open segments),
    and every segment's (width, frames) for the frame cap."""
    n = len(chains.length)
    offset = chains.offset
    sizes: List[Tuple[int, int]] = []
    root = _Segment(0, 0, n, [])
    open_: List[_Segment] = [root]
    for k in range(1, n + 1):
        shared = chains.shared[k] if k < n else 0  # frames chain k-1 shares with chain k
        top = open_[-1]
        length = chains.length[k - 1]
        leaf = _Segment(length, k - 1, k, None)
        if shared > top.top:  # chains k-1 and k share more than k-2 and k-1 do
            open_.append(_Segment(shared, k - 1, n, [leaf] if length > shared else []))
            if length > shared:
                sizes.append((offset[k] - offset[k - 1], length - shared))
            continue
        if length > top.top:  # (a chain that is a prefix of another has no frames of its own)
            assert top.children is not None
            top.children.append(leaf)
            sizes.append((offset[k] - offset[k - 1], length - top.top))
        last: Optional[_Segment] = None
        while shared < open_[-1].top:
            last = open_.pop()
            last.hi = k
            parent = open_[-1]
            if shared <= parent.top:
                assert parent.children is not None
                parent.children.append(last)
                sizes.append((offset[k] - offset[last.lo], last.top - parent.top))
                last = None
        if shared > open_[-1].top:
            assert last is not None
            open_.append(_Segment(shared, last.lo, n, [last]))
            sizes.append((offset[k] - offset[last.lo], last.top - shared))
    return root, sizes


def _cut_off(sizes: List[Tuple[int, int]], max_frames: int) -> Optional[int]:
    """The width below which frames must go so that at most ``max_frames`` remain: one
    more than the (max_frames + 1)-th widest frame (None when they all fit)."""
    sizes.sort(reverse=True)
    seen = 0
    for width, count in sizes:
        seen += count
        if seen > max_frames:
            return width + 1
    return None


def flame_layout(report: Report, min_fraction: float = 0.0,
                 max_frames: Optional[int] = None) -> Layout:
    """The report's chain flame graph, laid out; frames narrower than ``min_fraction`` of
    the root are dropped with everything above them.

    ``max_frames`` raises the cut-off until at most that many frames remain (a busy trace
    can have hundreds of thousands, and the file must stay small enough to attach and
    open). A frame is never wider than its parent, so keeping "every frame at least this
    wide" keeps whole subtrees intact and the cut is exact.

    The SVG and HTML renderers ask for the same layout of the same report: the last
    capped one is kept (see :func:`_fingerprint`) and handed out again.
    """
    fingerprint = None
    if max_frames is not None:
        fingerprint = _fingerprint(report, min_fraction, max_frames)
        cached = _LAST.get("layout")
        if cached is not None and cached[0]() is report and cached[1] == fingerprint:
            return cached[2]
    chains = _chains(report)
    offset = chains.offset
    total = offset[-1]
    min_us: float = total * min_fraction
    frames = sum(chains.length) - sum(chains.shared)  # distinct frames below the root
    root, sizes = _segments(chains)
    if max_frames is not None and frames > max_frames:
        cut = _cut_off(sizes, max_frames)
        if cut is not None:
            min_us = max(min_us, cut)
    rects = [Rect(ROOT_NAME, ROOT, 0, 0, total, None)]
    elided_us = 0
    max_depth = 0
    todo = [(child, 0) for child in reversed(root.children or [])]
    while todo:  # depth-first, siblings in order; iterative, so no recursion limit
        segment, base = todo.pop()
        lo = segment.lo
        value = offset[segment.hi] - offset[lo]
        if value <= 0 or value < min_us:
            elided_us += value
            continue
        category = chains.heads[chains.head[lo]][0]
        for depth in range(base + 1, segment.top + 1):
            name, kind = chains.frame(lo, depth)
            rects.append(Rect(name, kind, depth, offset[lo], value, category))
        max_depth = max(max_depth, segment.top)
        if segment.children:
            todo.extend((child, segment.top) for child in reversed(segment.children))
    layout = Layout(rects, total, max_depth, frames - (len(rects) - 1), elided_us, min_us)
    if fingerprint is not None:
        _LAST["layout"] = (weakref.ref(report), fingerprint, layout)
    return layout


#: The last capped layout: its report (weakly), fingerprint and layout. One entry, never
#: more than ``max_frames`` rectangles.
_LAST: Dict[str, Tuple[weakref.ref, Tuple[object, ...], Layout]] = {}


def _fingerprint(report: Report, min_fraction: float,
                 max_frames: Optional[int]) -> Tuple[object, ...]:
    """Everything a layout depends on: the arguments, and per wakeup what its chain is
    made of (category, parties, stacks, flags, time). Compared with ``==``, which takes
    the same object as equal at once and otherwise compares values, so a report changed
    in any way a chain can see gets a new layout. Holding these (frozen or plain) values
    also means no identity in them can be reused while the entry lives."""
    return (min_fraction, max_frames,
            [(w.category, w.target, w.waker, w.preempted_by, w.edge.target_stack,
              w.edge.waker_stack, w.edge.preempted, w.edge.total_us) for w in report.wakeups])
