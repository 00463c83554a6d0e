"""The fast flame graph layout (sorted chain keys, LCP segments) against the obvious one.

``flame_layout`` never builds the frame tree: it sorts the chains as integer keys and lays
out only the frames that survive the cut-off. This file keeps the straightforward version
(merge every chain into a tree of nodes, then cut) as the reference and checks that both
give exactly the same rectangles, cut counts and cut-off, on random reports shaped to hit
the hard cases: shared prefixes and suffixes, equal chains, ties at the cut-off, frames that
repeat at different depths, one chain only, deep stacks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Edge, StackTable, Task
from kubectl_offwake.analysis.report import Party, Report, Totals, Wakeup
from kubectl_offwake.render import flamegraph as fg
from tests.sample_recording import build_sample_recording

# --------------------------------------------------------------------- the reference


@dataclass
class Node:
    name: str
    kind: str
    value: int = 0
    category: Optional[str] = None
    children: Dict[Tuple[str, str], Node] = field(default_factory=dict)


def reference_layout(report: Report, min_fraction: float = 0.0,
                     max_frames: Optional[int] = None) -> fg.Layout:
    """The tree-of-nodes layout the renderers used before (built frame by frame)."""
    several_pods = len({w.target.pod for w in report.wakeups if w.target.pod}) > 1
    root = Node(fg.ROOT_NAME, fg.ROOT)
    for wakeup in report.wakeups:
        value = wakeup.edge.total_us
        if value <= 0:
            continue
        root.value += value
        node = root
        for name, kind in fg.chain(wakeup, several_pods):
            child = node.children.get((name, kind))
            if child is None:
                child = node.children[(name, kind)] = Node(name, kind, category=wakeup.category)
            child.value += value
            node = child
    everything: List[Node] = []
    todo = list(root.children.values())
    while todo:
        node = todo.pop()
        everything.append(node)
        todo.extend(node.children.values())
    min_us = root.value * min_fraction
    values = sorted((n.value for n in everything), reverse=True)
    if max_frames is not None and len(values) > max_frames:
        min_us = max(min_us, values[max_frames] + 1)
    rects: List[fg.Rect] = []
    elided_frames = elided_us = max_depth = 0
    stack: List[Tuple[Node, int, int]] = [(root, 0, 0)]
    while stack:
        node, depth, x = stack.pop()
        if depth > 0 and (node.value <= 0 or node.value < min_us):
            below = [node]
            while below:
                current = below.pop()
                elided_frames += 1
                below.extend(current.children.values())
            elided_us += node.value
            continue
        rects.append(fg.Rect(node.name, node.kind, depth, x, node.value, node.category))
        max_depth = max(max_depth, depth)
        placed = []
        offset = x
        for key in sorted(node.children):
            child = node.children[key]
            placed.append((child, depth + 1, offset))
            offset += child.value
        stack.extend(reversed(placed))
    return fg.Layout(rects, root.value, max_depth, elided_frames, elided_us, min_us)


# ---------------------------------------------------------------------- random reports

NAMES = ["a", "b", "c", "ab", "schedule", "epoll_wait", "main", "--", "loop", "x y", ""]


def random_report(rng: random.Random, edges: int) -> Report:
    """Few distinct names, so chains share prefixes, suffixes and whole stacks."""
    table = StackTable()
    stacks = []
    for _ in range(rng.randrange(1, 12)):
        depth = rng.randrange(0, 7)
        frames = [rng.choice(NAMES) for _ in range(depth)]
        kernel = rng.choice([None, 0, depth // 2, depth])
        missing = rng.choice([None, None, None, "user", "kernel", "both"])
        stacks.append(table.intern(frames, kernel, missing))
    pods = ["ns/a", "ns/b", None]
    parties = [Party(rng.choice(["envoy", "wrk", "kubelet"]), i, i, rng.choice(["n1", "n2", ""]),
                     pod=rng.choice(pods)) for i in range(6)]
    wakeups: List[Wakeup] = []
    for _ in range(edges):
        target = rng.choice(parties)
        kind = rng.random()
        waker = rng.choice(parties) if kind < 0.7 else None
        preempted_by = rng.choice(parties) if 0.7 <= kind < 0.85 else None
        wstack = rng.choice(stacks + [None]) if waker is not None else None
        value = rng.choice([0, 1, 1, 2, 5, 10, 100, rng.randrange(1, 10_000)])
        edge = Edge(Task(target.comm, target.pid, target.tid), rng.choice(stacks),
                    Task(waker.comm, waker.pid, waker.tid) if waker else None, wstack, value,
                    1, preempted=waker is None and rng.random() < 0.5)
        wakeups.append(Wakeup(edge, rng.choice(["timer", "eventfd", "tcp-receive"]), "waker",
                              "test", target, waker, preempted_by))
    return Report({}, Totals(), wakeups, [], [], [], [])


@pytest.mark.parametrize("seed", range(60))
def test_same_layout_as_the_reference_on_random_reports(seed: int) -> None:
    rng = random.Random(seed)
    report = random_report(rng, rng.choice([0, 1, 2, 3, 10, 40, 150]))
    for min_fraction, max_frames in [(0.0, None), (0.01, None), (0.0, 5), (0.0, 30),
                                     (0.002, 12), (0.5, None), (0.0, 0)]:
        assert fg.flame_layout(report, min_fraction, max_frames) == reference_layout(
            report, min_fraction, max_frames), (min_fraction, max_frames)


def test_same_layout_as_the_reference_on_the_sample() -> None:
    report = analyze(build_sample_recording())
    for min_fraction, max_frames in [(0.0, None), (0.1 / 1180, 15_000), (0.001, 40)]:
        fast = fg.flame_layout(report, min_fraction, max_frames)
        assert fast == reference_layout(report, min_fraction, max_frames)
    assert len(fg.flame_layout(report).rects) > 100


def test_deep_chains_and_a_wide_fan_out() -> None:
    """Two 127-frame stacks per chain, and many chains below one frame."""
    table = StackTable()
    target = Party("envoy", 1, 1, "envoy")
    waker = Party("kubelet", 2, 2, "host: kubelet")
    wakeups = []
    for i in range(300):
        ts = table.intern([f"t{i % 7}"] + [f"deep{j}" for j in range(126)], 60)
        ws = table.intern([f"w{j}" for j in range(126)] + [f"leaf{i}"], 60)
        edge = Edge(Task("envoy", 1, 1), ts, Task("kubelet", 2, 2), ws, 1 + i % 13, 1)
        wakeups.append(Wakeup(edge, "timer", "waker", "test", target, waker))
    report = Report({}, Totals(), wakeups, [], [], [], [])
    for args in [(0.0, None), (0.0, 500), (0.01, None)]:
        assert fg.flame_layout(report, *args) == reference_layout(report, *args)


# ------------------------------------------------------------------ the shared layout

def test_svg_and_html_share_one_layout_until_the_report_changes() -> None:
    from kubectl_offwake.render import svg

    report = analyze(build_sample_recording())
    first = svg.svg_layout(report)
    assert svg.svg_layout(report) is first  # what the HTML renderer asks for next
    report.wakeups[0].category = "eventfd" if report.wakeups[0].category != "eventfd" else "timer"
    changed = svg.svg_layout(report)
    assert changed is not first
    assert changed == reference_layout(report, svg.MIN_WIDTH_PX / (svg.WIDTH - 2 * svg.PAD),
                                       svg.MAX_FRAMES)
    other = analyze(build_sample_recording())  # an equal report: recomputed, same result
    assert svg.svg_layout(other) == first


def test_rendering_pauses_garbage_collection_and_restores_it() -> None:
    import gc
    import io

    from kubectl_offwake.render import RenderOptions, gc_paused, render

    report = analyze(build_sample_recording())
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        render(report, "folded", io.StringIO(), RenderOptions())
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()
