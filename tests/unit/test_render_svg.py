"""The chain flame graph model and the SVG renderer.

The golden file is the sample recording (tests/sample_recording.py) through the real
analysis, checked by the ``golden`` fixture (tests/golden_files.py says how to regenerate it).
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Edge, StackTable, Task
from kubectl_offwake.analysis.report import Party, Report, Totals, Wakeup
from kubectl_offwake.render import RenderOptions, render, svg
from kubectl_offwake.render import flamegraph as fg
from tests.sample_recording import build_sample_recording

ROOT = Path(__file__).resolve().parents[2]
NS = "{http://www.w3.org/2000/svg}"

HOSTILE = [
    'std::map<int, std::string>::operator[](int const&) & "q" \'a\'',
    "<script>alert(1)</script>",
    "]]><evil/>",
    "ctl\x01\x1bchar",
    "lone\udcffsurrogate",
    "http://evil.example/x.js",
]


# --------------------------------------------------------------------------- builders

def party(comm: str, tid: int, name: Optional[str] = None, pod: Optional[str] = None) -> Party:
    return Party(comm, tid, tid, name or comm, pod=pod)


def make_report(specs: Sequence[Tuple[str, Party, Sequence[str], Optional[Party],
                                      Sequence[str], int]],
                kernel_depth: Optional[int] = None) -> Report:
    """A Report by hand: (category, target, target stack, waker, waker stack, µs) per wakeup."""
    stacks = StackTable()
    wakeups: List[Wakeup] = []
    for category, target, tstack, waker, wstack, us in specs:
        ts = stacks.intern(list(tstack), kernel_depth)
        ws = stacks.intern(list(wstack), kernel_depth) if waker is not None else None
        edge = Edge(Task(target.comm, target.pid, target.tid), ts,
                    Task(waker.comm, waker.pid, waker.tid) if waker else None, ws, us, 1,
                    preempted=waker is None)
        wakeups.append(Wakeup(edge, category, "waker" if waker else "none", "test", target, waker))
    total = sum(w.edge.total_us for w in wakeups)
    return Report({"target": "t"}, Totals(off_cpu_us=total, edges=len(wakeups)), wakeups,
                  [], [], [], [])


def to_svg(report: Report) -> str:
    out = io.StringIO()
    render(report, "svg", out, RenderOptions())
    return out.getvalue()


@pytest.fixture(scope="module")
def sample_report() -> Report:
    return analyze(build_sample_recording())


# --------------------------------------------------------------------------- the model

def test_chain_order_is_category_thread_target_separator_waker():
    main = party("envoy", 1)
    kubelet = party("kubelet", 2, "host: kubelet")
    report = make_report([("tcp-receive", main, ["schedule", "do_epoll_wait", "main"],
                           kubelet, ["try_to_wake_up", "tcp_data_queue", "probe"], 100)],
                         kernel_depth=2)
    assert fg.chain(report.wakeups[0], several_pods=False) == [
        ("tcp-receive", fg.CATEGORY),
        ("envoy", fg.THREAD),
        ("main", fg.TARGET_USER),  # target stack root → leaf
        ("do_epoll_wait", fg.TARGET_KERNEL),
        ("schedule", fg.TARGET_KERNEL),
        ("--", fg.SEPARATOR),
        ("try_to_wake_up", fg.WAKER_KERNEL),  # waker stack leaf → root
        ("tcp_data_queue", fg.WAKER_KERNEL),
        ("probe", fg.WAKER_USER),
        ("host: kubelet", fg.WAKER),  # the comm is already in the name
    ]


def test_without_a_kernel_user_boundary_no_frame_claims_one():
    t = party("envoy", 1)
    report = make_report([("timer", t, ["schedule", "main"], t, ["hrtimer_wakeup"], 5)])
    kinds = [k for _n, k in fg.chain(report.wakeups[0], several_pods=False)]
    assert kinds[2:] == [fg.TARGET_FRAME, fg.TARGET_FRAME, fg.SEPARATOR, fg.WAKER_FRAME, fg.WAKER]


def test_a_missing_half_of_a_stack_is_shown_at_its_root_end():
    t = party("envoy", 1)
    report = make_report([("preempted-involuntary", t, ["__schedule", "irqentry_exit"], None,
                           [], 5)], kernel_depth=2)
    wakeup = report.wakeups[0]
    wakeup.edge.target_stack = StackTable().intern(["__schedule", "irqentry_exit"], 2, "user")
    names = [n for n, _k in fg.chain(wakeup, several_pods=False)]
    assert names[2:5] == ["[user stack missing]", "irqentry_exit", "__schedule"]


def test_preemption_chain_names_the_preemptor():
    worker = party("wrk:worker_0", 5)
    report = make_report([("preempted-involuntary", worker, ["schedule"], None, [], 10)])
    report.wakeups[0].preempted_by = party("cruncher", 9, "batch/noisy-7d9/stress")
    frames = fg.chain(report.wakeups[0], several_pods=False)
    assert frames[-2:] == [("--", fg.SEPARATOR),
                           ("preempted by batch/noisy-7d9/stress (cruncher)", fg.WAKER)]


def test_thread_label_gets_the_pod_only_when_several_pods_are_traced():
    a = party("envoy", 1, "ns/a/istio-proxy", pod="ns/a")
    b = party("envoy", 2, "ns/b/istio-proxy", pod="ns/b")
    one = make_report([("timer", a, ["x"], a, ["y"], 5)])
    two = make_report([("timer", a, ["x"], a, ["y"], 5), ("timer", b, ["x"], b, ["y"], 7)])
    assert fg.chain(one.wakeups[0], fg_pods(one))[1] == ("envoy", fg.THREAD)
    labels = {r.name for r in fg.flame_layout(two).rects if r.kind == fg.THREAD}
    assert labels == {"envoy (ns/a)", "envoy (ns/b)"}


def fg_pods(report: Report) -> bool:
    return len({w.target.pod for w in report.wakeups if w.target.pod}) > 1


def test_widths_add_up_and_children_sit_inside_their_parent(sample_report):
    layout = fg.flame_layout(sample_report)
    root = layout.rects[0]
    assert (root.name, root.depth, root.x) == ("all", 0, 0)
    assert root.width == layout.total_us == sum(w.edge.total_us for w in sample_report.wakeups)
    assert layout.elided_frames == 0
    # Walk depth-first: each frame's children tile [x, x + width) from the left, no gaps.
    stack: List[Tuple[fg.Rect, int]] = [(root, 0)]
    for rect in layout.rects[1:]:
        while stack and stack[-1][0].depth >= rect.depth:
            stack.pop()
        parent, used = stack[-1]
        assert rect.depth == parent.depth + 1
        assert rect.x == parent.x + used
        stack[-1] = (parent, used + rect.width)
        assert stack[-1][1] <= parent.width
        stack.append((rect, 0))


def test_siblings_are_alphabetical(sample_report):
    layout = fg.flame_layout(sample_report)
    categories = [r.name for r in layout.rects if r.depth == 1]
    assert categories == sorted(categories)
    assert len(categories) == len({w.category for w in sample_report.wakeups})


def test_minimum_width_cuts_narrow_frames_and_counts_them():
    t = party("envoy", 1)
    report = make_report([
        ("timer", t, ["a", "b"], t, ["c"], 10_000),
        ("eventfd", t, ["d", "e"], t, ["f"], 5),  # 0.05% of the total
    ])
    full = fg.flame_layout(report)
    cut = fg.flame_layout(report, min_fraction=0.001)
    assert {r.name for r in full.rects} >= {"eventfd", "d", "e", "f"}
    assert not {"eventfd", "d", "e", "f"} & {r.name for r in cut.rects}
    # category, thread, 2 target frames, --, 1 waker frame, waker name
    assert cut.elided_frames == 7
    assert cut.elided_us == 5
    assert cut.total_us == full.total_us == 10_005


def test_empty_report_lays_out_only_the_root():
    layout = fg.flame_layout(make_report([]))
    assert [r.name for r in layout.rects] == ["all"]
    assert layout.total_us == 0
    ET.fromstring(to_svg(make_report([])).split("?>", 1)[1])


# --------------------------------------------------------------------------- the SVG

def test_golden(sample_report, golden):
    golden("sample.svg", to_svg(sample_report))


def test_svg_is_well_formed_and_has_one_group_per_frame(sample_report):
    text = to_svg(sample_report)
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == NS + "svg"
    frames = root.findall(f".//{NS}g[@class]")
    frames = [g for g in frames if g.get("class", "").startswith("fr ")]
    layout = svg.svg_layout(sample_report)
    assert len(frames) == len(layout.rects)
    for group, rect in zip(frames, layout.rects):
        title = group.find(NS + "title")
        assert title is not None and title.text is not None
        assert title.text.split("\n")[0] == rect.name
        assert int(group.get("data-w", "-1")) == rect.width
        assert group.find(NS + "rect") is not None
    # The script travels inside the file, and nothing is fetched from outside.
    assert root.find(NS + "script") is not None
    assert not re.search(r'(?:href|src)\s*=|url\(|@import', text)


def test_tooltip_has_name_microseconds_and_share(sample_report):
    text = to_svg(sample_report)
    root = ET.fromstring(text.encode("utf-8"))
    total = sample_report.wakeups and sum(w.edge.total_us for w in sample_report.wakeups)
    cats = [g for g in root.iter(NS + "g") if "k-category" in g.get("class", "")]
    assert cats
    for group in cats:
        title = group.find(NS + "title")
        assert title is not None and title.text
        width = int(group.get("data-w", "0"))
        assert f"{width:,} µs" in title.text
        assert f"{100 * width / total:.1f}%" in title.text or "<0.1%" in title.text


def test_hostile_frame_names_are_escaped():
    t = party(HOSTILE[1], 1, name=HOSTILE[0])
    report = make_report([("other", t, HOSTILE[:3], t, HOSTILE[3:], 1000)])
    text = to_svg(report)
    root = ET.fromstring(text.encode("utf-8"))  # parses: nothing broke out of its element
    titles = [el.text or "" for el in root.iter(NS + "title")]
    names = [t.split("\n")[0] for t in titles]
    for name in HOSTILE[:3] + [HOSTILE[5]]:
        assert name in names
    assert "ctl\\x01\\x1bchar" in names and "lone\\udcffsurrogate" in names
    assert "<script>alert" not in text and "<evil" not in text
    assert len(root.findall(NS + "script")) == 1
    text.encode("utf-8")  # no lone surrogate left to break the file write


def test_same_input_gives_the_same_bytes(sample_report):
    first = to_svg(sample_report)
    again = to_svg(analyze(build_sample_recording()))
    assert first == again


def test_order_of_wakeups_does_not_matter():
    """Siblings are sorted by name, so the picture ignores the order wakeups come in."""
    shuffled = analyze(build_sample_recording())
    first = to_svg(shuffled)
    random.Random(7).shuffle(shuffled.wakeups)
    assert to_svg(shuffled) == first


def test_output_does_not_depend_on_the_hash_seed():
    code = ("import io,sys;from kubectl_offwake.analysis import analyze;"
            "from kubectl_offwake.render import render, RenderOptions;"
            "from tests.sample_recording import build_sample_recording as b;"
            "o=io.StringIO();render(analyze(b()),'svg',o,RenderOptions());"
            "sys.stdout.buffer.write(o.getvalue().encode())")
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                              capture_output=True, check=True, timeout=60)
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and outputs[0]


def _rgb(color: str) -> Tuple[int, int, int]:
    r, g, b = (int(v) for v in re.findall(r"\d+", color))
    return r, g, b


def test_waker_side_is_cool_and_target_side_warm(sample_report):
    layout = svg.svg_layout(sample_report)
    for rect in layout.rects:
        r, _g, b = _rgb(svg.frame_color(rect.name, rect.kind, rect.category))
        if rect.kind in (fg.TARGET_USER, fg.TARGET_KERNEL, fg.TARGET_FRAME):
            assert r > b + 60, rect
        elif rect.kind in (fg.WAKER_USER, fg.WAKER_KERNEL, fg.WAKER_FRAME, fg.WAKER):
            assert b > r + 40, rect
    assert svg.frame_color("f", fg.TARGET_USER) == svg.frame_color("f", fg.TARGET_USER)
    assert svg.frame_color("f", fg.TARGET_USER) != svg.frame_color("g", fg.TARGET_USER)


def test_every_category_has_its_own_colour():
    from kubectl_offwake.analysis.categories import CATEGORIES
    colours = {svg.category_color(c.id) for c in CATEGORIES}
    assert len(colours) == len(CATEGORIES)
    stack_colours = {svg.frame_color(n, k) for n in ("a", "b", "c")
                     for k in (fg.TARGET_USER, fg.TARGET_KERNEL, fg.WAKER_USER, fg.WAKER_KERNEL)}
    assert not colours & stack_colours


def test_frame_labels_fit_their_frames(sample_report):
    root = ET.fromstring(to_svg(sample_report).encode("utf-8"))
    for group in root.iter(NS + "g"):
        rect, label = group.find(NS + "rect"), group.find(NS + "text")
        if rect is None or label is None or not label.text:
            continue
        assert len(label.text) * svg.CHAR_WIDTH <= float(rect.get("width", "0")) + 1


def test_frame_cap_raises_the_cut_off_exactly():
    t = party("envoy", 1)
    specs = [("timer", t, [f"leaf{i}", "loop"], t, ["wake"], 100 + i) for i in range(50)]
    report = make_report(specs)
    full = fg.flame_layout(report)
    capped = fg.flame_layout(report, max_frames=60)
    assert len(full.rects) - 1 > 60
    assert len(capped.rects) - 1 <= 60
    assert len(capped.rects) + capped.elided_frames == len(full.rects)
    kept = [r for r in capped.rects if r.name.startswith("leaf")]
    dropped = {r.name for r in full.rects} - {r.name for r in capped.rects}
    # the widest stacks stay, the narrowest go
    assert min(r.width for r in kept) > max(
        r.width for r in full.rects if r.name in dropped)
    assert capped.total_us == full.total_us
