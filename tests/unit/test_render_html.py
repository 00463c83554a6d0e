"""The self-contained HTML report.

The golden file is the sample recording (tests/sample_recording.py) through the real
analysis, checked by the ``golden`` fixture (tests/golden_files.py says how to regenerate it).
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Edge, Pending, StackTable, Task
from kubectl_offwake.analysis.report import (
    Finding,
    Group,
    Party,
    Report,
    ThreadSummary,
    Totals,
    Wakeup,
)
from kubectl_offwake.render import RenderOptions, render
from kubectl_offwake.units import fmt_share, fmt_us
from kubectl_offwake.wire.schema import TRUNCATED_FRAME
from tests.sample_recording import build_sample_recording

ROOT = Path(__file__).resolve().parents[2]

#: Attributes through which a page makes the browser fetch something.
FETCHING_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data",
                       "background", "xlink:href", "manifest", "ping", "codebase"}
#: Script calls that fetch or connect.
FETCHING_CALLS = re.compile(r"\bfetch\s*\(|XMLHttpRequest|WebSocket|EventSource|importScripts"
                            r"|\bimport\s*\(|sendBeacon|\.src\s*=|\.href\s*=")


class Page(HTMLParser):
    """Collects what the tests look at: tags and attributes, text, scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.text: List[str] = []
        self.scripts: List[str] = []
        self.styles: List[str] = []
        self._in: Optional[str] = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)
        else:
            self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def to_html(report: Report) -> str:
    out = io.StringIO()
    render(report, "html", out, RenderOptions())
    return out.getvalue()


@pytest.fixture(scope="module")
def sample_report() -> Report:
    return analyze(build_sample_recording())


@pytest.fixture(scope="module")
def sample_html(sample_report) -> str:
    return to_html(sample_report)


HOSTILE_FRAME = 'std::vector<std::pair<int, "q">>::operator<<(\'a\') & </script><img src=x>'
HOSTILE_URL = "https://evil.example/steal.js"


def hostile_report() -> Report:
    """Text from everywhere a report carries it, each piece trying to break out."""
    stacks = StackTable()
    ts = stacks.intern([HOSTILE_FRAME, "</style><script>alert(1)</script>"], 1)
    ws = stacks.intern([HOSTILE_URL, "url(http://evil.example/a.png)"], 1)
    target = Party("<b>thr</b>", 1, 2, "ns/<pod>/c&c", pod="ns/<pod>", role="worker")
    waker = Party("w\"aker'", 3, 4, "host: <iframe src=//evil.example>")
    edge = Edge(Task(target.comm, 1, 2), ts, Task(waker.comm, 3, 4), ws, 5000, 3)
    wakeup = Wakeup(edge, "other", "waker", "test", target, waker, detail="<detail>")
    group = Group("other", "<Other & more>", edges=1, count=3, total_us=5000, share=1.0)
    return Report(
        source={"target": "<script>alert('t')</script>", "node": "n\"ode", "elapsed_s": 1.5,
                "note": {"k": "<v>"}},
        totals=Totals(off_cpu_us=5000, wakeups=3, edges=1, threads=1),
        wakeups=[wakeup],
        by_category=[group],
        by_waker=[Group("w", waker.name, edges=1, count=3, total_us=5000, share=1.0)],
        by_thread=[ThreadSummary(target, 5000, 3, None, None, [group])],
        findings=[Finding("x<y", "critical", "Title <i>x</i>", "Text & <a href=" + HOSTILE_URL
                          + ">click</a>", {"k<": "<v>"})],
        warnings=["<marquee>warn</marquee>"],
    )


# --------------------------------------------------------------------------- tests

def test_golden(sample_html, golden):
    golden("sample.html", sample_html)


def test_same_input_gives_the_same_bytes(sample_html):
    assert to_html(analyze(build_sample_recording())) == sample_html


def test_page_fetches_nothing(sample_html):
    page = parse(sample_html)
    for tag, attrs in page.tags:
        assert not FETCHING_ATTRIBUTES & set(attrs), (tag, attrs)
        assert tag not in ("link", "iframe", "img", "object", "embed", "base", "image", "use")
        assert "url(" not in (attrs.get("style") or "")
    for style in page.styles:
        assert "@import" not in style and "url(" not in style
    for script in page.scripts:
        assert not FETCHING_CALLS.search(script)
    assert "http://" not in sample_html and "https://" not in sample_html
    csp = [a.get("content") or "" for t, a in page.tags
           if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]


def test_page_says_what_where_and_how_long(sample_report, sample_html):
    text = " ".join(parse(sample_html).text)
    assert "app/productpage-v1-6b7f/istio-proxy" in text
    assert "worker-2" in text and "6.6.58-talos" in text
    assert "30.0 s" in text
    assert fmt_us(sample_report.totals.off_cpu_us) in text
    assert f"{sample_report.totals.wakeups:,}" in text


def test_page_has_every_section_and_row(sample_report, sample_html):
    page = parse(sample_html)
    text = " ".join(page.text)
    ids = {a.get("id") for _t, a in page.tags}
    assert {"totals", "findings", "categories", "flame", "wakers", "threads", "pending",
            "throttling", "source", "warnings", "fg-svg", "fg-term"} <= ids
    for group in sample_report.by_category:
        assert group.label in text
        assert fmt_share(group.share) in text
    for group in sample_report.by_waker[:20]:
        assert group.label in text
    for thread in sample_report.by_thread:
        assert thread.target.comm in text
    for finding in sample_report.findings:
        assert finding.title in text
    for warning in sample_report.warnings:
        assert warning in text


def test_flame_graph_is_inline_with_one_frame_group_per_frame(sample_report, sample_html):
    from kubectl_offwake.render.svg import svg_layout
    page = parse(sample_html)
    frames = [a for t, a in page.tags if t == "g" and (a.get("class") or "").startswith("fr ")]
    assert len(frames) == len(svg_layout(sample_report).rects)
    assert sum(1 for t, _a in page.tags if t == "script") == 1
    assert "offwakeFlame" in page.scripts[0]


def test_hostile_text_is_escaped_everywhere():
    text = to_html(hostile_report())
    page = parse(text)
    tags = [t for t, _a in page.tags]
    assert tags.count("script") == 1
    assert tags.count("style") == 2  # the page's and the inline flame graph's
    for bad in ("img", "iframe", "marquee", "i", "a"):
        assert bad not in tags
    visible = "".join(page.text)
    for piece in ("<b>thr</b>", "Title <i>x</i>", "<marquee>warn</marquee>",
                  "<script>alert('t')</script>", "<Other & more>"):
        assert piece in visible, piece
    # The frame names reach the flame graph's tooltips intact.
    assert HOSTILE_FRAME in visible and HOSTILE_URL in visible
    # A URL in a frame name is text, never an attribute a browser would follow.
    for _tag, attrs in page.tags:
        assert not FETCHING_ATTRIBUTES & set(attrs)


def test_empty_report_renders():
    empty = Report({}, Totals(), [], [], [], [], [])
    page = parse(to_html(empty))
    text = " ".join(page.text)
    assert "no wakeups were recorded" in text
    assert "no off-CPU time was recorded" in text


def test_a_truncated_stack_is_marked_in_the_flame_graph_and_the_pending_table():
    """The frame the collector ends a looping frame-pointer walk with is a marker (where the
    stack stopped), set apart from code wherever the page shows frames."""
    stacks = StackTable()
    ts = stacks.intern(["schedule", "pipe_read", "read_in_loop", TRUNCATED_FRAME], 2)
    target = Party("fp_loop", 1, 2, "host: fp_loop")
    edge = Edge(Task(target.comm, 1, 2), ts, Task("w", 3, 4), stacks.intern(["w"], 0), 50, 1)
    report = Report({}, Totals(off_cpu_us=50, wakeups=1, edges=1, threads=1),
                    [Wakeup(edge, "pipe", "waker", "test", target, Party("w", 3, 4, "host: w"))],
                    [], [], [], [], pending=[Pending(Task("fp_loop", 1, 2), 9000, ts)])
    page = parse(to_html(report))
    marked = [attrs for tag, attrs in page.tags if "marker" in (attrs.get("class") or "")]
    assert {tag for tag, attrs in page.tags if attrs in marked} == {"g", "code"}
    assert TRUNCATED_FRAME in page.text
