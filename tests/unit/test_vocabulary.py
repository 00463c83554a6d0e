"""One vocabulary: the same thing has the same name in every view."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import xml.etree.ElementTree as ET
from typing import List

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Task
from kubectl_offwake.analysis.report import Party, Report, Wakeup
from kubectl_offwake.analysis.vocabulary import (
    bystander,
    cause_phrase,
    source_facts,
    thread_name,
    traced_field,
    traced_seconds,
    waker_group,
    with_comm,
    woken_by,
)
from kubectl_offwake.render import RenderOptions, render
from tests.sample_recording import build_sample_recording


@pytest.fixture(scope="module")
def sample() -> Report:
    return analyze(build_sample_recording())


def _render(report: Report, fmt: str) -> str:
    out = io.StringIO()
    render(report, fmt, out, RenderOptions(width=120))
    return out.getvalue()


# --------------------------------------------------------------------- traced duration

@pytest.mark.parametrize("record,expected", [
    ({"tracing_s": 4.5, "elapsed_s": 6.0}, 4.5),
    ({"tracing_s": None, "elapsed_s": 6.0}, 6.0),
    ({"elapsed_s": 6.0}, 6.0),
    ({"tracing_s": "x", "elapsed_s": 6.0}, "x"),  # the caller decides what a bad value is
    ({}, None),
])
def test_the_traced_field_prefers_tracing_s(record: dict, expected: object) -> None:
    assert traced_field(record) == expected


@pytest.mark.parametrize("source,expected", [
    ({"elapsed_s": 4.5, "duration_s": 10}, 4.5),
    ({"elapsed_s": 0, "duration_s": 10}, 10.0),
    ({"duration_s": 10}, 10.0),
    ({"elapsed_s": True}, None),
    ({"elapsed_s": -1}, None),
    ({}, None),
])
def test_traced_seconds_is_a_positive_number_or_none(source: dict, expected: object) -> None:
    assert traced_seconds(source) == expected


def test_the_summary_and_the_findings_use_the_same_duration(sample: Report) -> None:
    recording = build_sample_recording()
    recording.source["elapsed_s"] = 0  # unknown: fall back to what was asked for
    recording.source["duration_s"] = 15
    report = analyze(recording)
    assert source_facts(report.source)[0].startswith("traced 15.0 s")
    dns = next(f for f in report.findings if f.id == "dns-storm")
    assert dns.evidence["duration_s"] == 15.0


# ----------------------------------------------------------------------------- names

def test_a_name_shows_the_comm_it_hides() -> None:
    assert with_comm("app/pod/istio-proxy", "pilot-agent") == "app/pod/istio-proxy (pilot-agent)"
    assert with_comm("kube-system/coredns-1/coredns", "coredns") == "kube-system/coredns-1/coredns"
    assert with_comm("host: kubelet", "kubelet") == "host: kubelet"
    assert with_comm("ns/pod/c", "od/c") == "ns/pod/c (od/c)"  # not fooled by a suffix
    assert thread_name(Party("envoy", 1, 7, "x")) == "envoy (7)"
    assert thread_name(Task("envoy")) == "envoy"


def _interrupt_in_cruncher(report: Report) -> Wakeup:
    """The sample's timer interrupt that landed while the noisy neighbour was running."""
    return next(w for w in report.wakeups
                if w.cause == "interrupt" and w.waker and w.waker.comm == "cruncher")


def test_an_interrupt_wake_is_named_by_the_interrupt(sample: Report) -> None:
    wakeup = _interrupt_in_cruncher(sample)
    assert woken_by(wakeup) == "interrupt (timer)"
    assert waker_group(wakeup) == ("interrupt:timer", "interrupt (timer)")
    by = bystander(wakeup)
    assert by is not None and by.name == "batch/cruncher-7d9/cruncher"
    assert cause_phrase(wakeup) == ("in an interrupt while batch/cruncher-7d9/cruncher was on "
                                    "the CPU")
    ordinary = next(w for w in sample.wakeups if w.cause == "waker")
    assert bystander(ordinary) is None


def test_every_view_credits_the_interrupt_not_the_bystander(sample: Report) -> None:
    wakeup = _interrupt_in_cruncher(sample)
    only = dataclasses.replace(sample, wakeups=[wakeup], findings=[])
    bystander_name = "batch/cruncher-7d9/cruncher"

    table = _render(only, "table")
    paths = table[table.index("Heaviest wake paths"):]
    assert "← interrupt (timer)" in paths and f"← {bystander_name}" not in paths
    assert f"while {bystander_name} was on the CPU" in paths

    (entry,) = json.loads(_render(only, "json"))["wakeups"]
    assert entry["waker"]["name"] == entry["woken_by"] == "interrupt (timer)"
    assert entry["waker"]["comm"] is None and entry["waker"]["pid"] is None
    assert entry["bystander"]["name"] == bystander_name
    assert entry["bystander"]["comm"] == "cruncher"

    svg_wakers = _waker_frames(ET.fromstring(_render(only, "svg").encode("utf-8")))
    assert svg_wakers == ["interrupt (timer)"]
    html = _render(only, "html")
    svg = html[html.index("<svg"):html.index("</svg>") + len("</svg>")]
    assert _waker_frames(ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/'
                                                          '2000/svg" ', 1))) == svg_wakers

    speedscope = json.loads(_render(only, "speedscope"))
    frames = speedscope["shared"]["frames"]
    (sample_chain,) = speedscope["profiles"][0]["samples"]
    assert frames[sample_chain[-1]]["name"] == "interrupt (timer)"
    assert not any(f["name"].startswith(bystander_name) for f in frames)

    # Folded is BCC's format: the last field is the task the kernel reported, and a
    # re-import classifies the wake from its stack again.
    (line,) = _render(only, "folded").splitlines()
    assert re.search(r";cruncher \d+$", line)


def _waker_frames(root: ET.Element) -> List[str]:
    return [(g.find("{http://www.w3.org/2000/svg}title").text or "").split("\n")[0]
            for g in root.iter("{http://www.w3.org/2000/svg}g")
            if "k-waker" in (g.get("class") or "").split()]
