"""Names from a node are untrusted: every output shows them neutralized.

The sample recording is rewritten so that every string a node controls (thread and process
comms, pod and container names, stack frames, the node's and kernel's names, warnings, loss
counter names) carries an escape sequence that would clear the screen, rich markup, HTML,
a C1 CSI, DEL, a bidi override, a ``;`` and a line break. Then every format is rendered
and checked the way its reader would be hurt: the terminal by control characters, a
browser by live markup, a folded-file consumer by broken lines; JSON keeps names exact.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Dict, List, Optional

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Recording, Stack, StackTable, Task
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.importers.offwaketime_folded import parse_folded
from kubectl_offwake.render import RenderOptions, render
from tests.sample_recording import build_sample_recording
from tests.untrusted_checks import (
    FOLDED_LINE,
    UNSAFE,
    assert_html_inert,
    assert_svg_inert,
    assert_terminal_safe,
)

#: What a hostile process names its threads (and what a hostile node says about itself).
HOSTILE = "\x1b[2J[red]x<svg onload=1>\u202e\x9b\x7f;\n"
#: What rich writes for colour: SGR sequences only.
SGR = re.compile("\x1b\\[[0-9;]*m")


def _h(text: Optional[str]) -> Optional[str]:
    return None if text is None else text + HOSTILE


def hostile_recording() -> Recording:
    """The sample recording with a hostile suffix on every name a node controls."""
    rec = build_sample_recording()
    stacks = StackTable()
    tasks: Dict[Task, Task] = {}
    memo: Dict[int, Stack] = {}

    def task(t: Optional[Task]) -> Optional[Task]:
        if t is None:
            return None
        if t not in tasks:
            tasks[t] = Task(t.comm + HOSTILE, t.pid, t.tid)
        return tasks[t]

    def stack(s: Optional[Stack]) -> Optional[Stack]:
        if s is None:
            return None
        if id(s) not in memo:
            memo[id(s)] = stacks.intern([f + HOSTILE for f in s.frames], s.kernel_depth,
                                        s.missing)
        return memo[id(s)]

    rec.stacks = stacks
    rec.edges = [dataclasses.replace(e, target=task(e.target), waker=task(e.waker),
                                     target_stack=stack(e.target_stack),
                                     waker_stack=stack(e.waker_stack),
                                     preempted_by=task(e.preempted_by)) for e in rec.edges]
    for info in rec.processes.values():
        info.comm += HOSTILE
        info.pod, info.container, info.label = _h(info.pod), _h(info.container), _h(info.label)
        info.threads = {tid: comm + HOSTILE for tid, comm in info.threads.items()}
    rec.oncpu = [dataclasses.replace(o, task=task(o.task)) for o in rec.oncpu]
    rec.queued = [dataclasses.replace(q, task=task(q.task), holder=task(q.holder))
                  for q in rec.queued]
    # Counter names carry listener and cluster names from the configuration, and the
    # admin address and listening sockets come from the node too.
    rec.envoy_stats = [dataclasses.replace(
        e, admin=_h(e.admin),
        delta={k.replace("0.0.0.0_15006", "0.0.0.0_15006" + HOSTILE): v
               for k, v in e.delta.items()},
        listeners={k + HOSTILE: v for k, v in e.listeners.items()}) for e in rec.envoy_stats]
    rec.pending = [dataclasses.replace(p, task=task(p.task), stack=stack(p.stack))
                   for p in rec.pending]
    for key in ("node", "kernel", "bcc_version"):
        rec.source[key] = str(rec.source.get(key, key)) + HOSTILE
    rec.warnings = [w + HOSTILE for w in rec.warnings]
    rec.lost = {name + HOSTILE: count for name, count in rec.lost.items()}
    return rec


@pytest.fixture(scope="module")
def report() -> Report:
    return analyze(hostile_recording())


def _render(report: Report, fmt: str, **options: object) -> str:
    out = io.StringIO()
    render(report, fmt, out, RenderOptions(**options))  # type: ignore[arg-type]
    return out.getvalue()


def test_the_hostile_names_reach_the_report(report: Report) -> None:
    """Guard for the tests below: the report really carries the hostile names."""
    assert any(HOSTILE in w.target.comm for w in report.wakeups)
    assert any(w.waker and w.waker.pod and HOSTILE in w.waker.pod for w in report.wakeups)
    assert any(HOSTILE in f for w in report.wakeups for f in w.edge.target_stack.frames)
    assert any(HOSTILE in f.text for f in report.findings)
    assert any(h.holder and HOSTILE in h.label for h in report.holders)
    assert any(HOSTILE in a for side in report.envoy for a in side.counts.listeners)


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("width", [80, 120])
def test_table_has_no_control_character_and_no_live_markup(report: Report, color: bool,
                                                            width: int) -> None:
    text = _render(report, "table", color=color, width=width)
    plain = SGR.sub("", text)
    assert_terminal_safe(plain)
    assert "\\x1b[2J[red]x<svg onload=1>\\u202e\\x9b\\x7f;\\x0a" in plain.replace("\n", "")
    if not color:
        assert text == plain


@pytest.mark.parametrize("fmt", ["json", "speedscope"])
def test_json_documents_keep_names_exact_and_escaped(report: Report, fmt: str) -> None:
    text = _render(report, fmt)
    assert not UNSAFE.search(text), UNSAFE.search(text)
    document = json.loads(text)
    strings = list(_strings(document))
    assert any(s.endswith(HOSTILE) for s in strings)  # decoded: the exact names


def _strings(value: object) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_folded_lines_survive_and_re_import_to_the_same_lines(report: Report) -> None:
    text = _render(report, "folded")
    assert not UNSAFE.search(text)
    lines = text.splitlines()
    assert len(lines) == len(set(lines)) > 10
    for line in lines:
        assert FOLDED_LINE.fullmatch(line), line
    again = analyze(parse_folded(text, "h1-hostile.folded"))
    assert _render(again, "folded") == text
    comms = {w.target.comm for w in again.wakeups}
    assert any(c.endswith("\\x1b[2J[red]x<svg onload=1>\\u202e\\x9b\\x7f:\\x0a") for c in comms)


def test_html_has_no_live_markup_from_names(report: Report) -> None:
    text = _render(report, "html")
    assert_html_inert(text)
    assert "&lt;svg onload=1&gt;" in text


def test_svg_has_no_live_markup_from_names(report: Report) -> None:
    titles = assert_svg_inert(_render(report, "svg"))
    assert "<svg onload=1>\\u202e" in titles  # shown as text
