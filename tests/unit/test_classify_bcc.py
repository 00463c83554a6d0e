"""The classification cases of test_classify.py, as BCC offwaketime would print them.

tests/data/classify/ holds each case rendered in offwaketime's text form and in its folded
(``-f``) form, both with ``-d`` (kernel/user delimiter). The files are read with the real
importer (``load_input``) and analysed with the real ``analyze``; every edge, found by its
unique off-CPU value, must be classified exactly as the case says. So the importer's
stack orientation and kernel/user split, and the classifier, are tested together.

The files are generated from the cases; after changing a case, regenerate and review::

    OFFWAKE_UPDATE_CLASSIFY=1 python -m pytest tests/unit/test_classify_bcc.py -q
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.report import Wakeup
from kubectl_offwake.importers import load_input
from tests.unit.test_classify import CASES, Case

DATA = Path(__file__).resolve().parent.parent / "data" / "classify"
TEXT = DATA / "offwaketime.txt"
FOLDED = DATA / "offwaketime.folded"
BANNER = ("Tracing blocked time (us) by user + kernel off-CPU and waker stack for 10 secs.")


def _tid(case: Case, waker: bool) -> int:
    """Stable thread ids; wakers and targets never share one."""
    return case.value * 10 + (1 if waker else 0)


def render_text(cases: Sequence[Case]) -> str:
    """offwaketime -d, default output: waker halves root first, target halves leaf first."""
    out: List[str] = [BANNER, ""]
    for c in cases:
        if c.waker_comm is None:
            out.append("    waker:            0")
        else:
            out.append(f"    waker:           {c.waker_comm} {_tid(c, True)}")
            user = list(reversed(c.waker_user))
            kernel = list(reversed(c.waker_kernel))
            out.extend(f"    {f}" for f in user)
            if user and kernel:
                out.append("    -")
            out.extend(f"    {f}" for f in kernel)
        out.append("    --               --")
        out.extend(f"    {f}" for f in c.target_kernel)
        if c.target_kernel and c.target_user:
            out.append("    -")
        out.extend(f"    {f}" for f in c.target_user)
        out.append(f"    target:          {c.target_comm} {_tid(c, False)}")
        out.append(f"        {c.value}")
        out.append("")
    return "\n".join(out)


def render_folded(cases: Sequence[Case]) -> str:
    """offwaketime -f -d: target root..leaf, ``--``, waker leaf..root, then the value."""
    lines: List[str] = []
    for c in cases:
        parts: List[str] = [c.target_comm]
        user = list(reversed(c.target_user))
        kernel = list(reversed(c.target_kernel))
        parts.extend(user)
        if user and kernel:
            parts.append("-")
        parts.extend(kernel)
        parts.append("--")
        if c.waker_comm is not None:
            parts.extend(c.waker_kernel)
            if c.waker_kernel and c.waker_user:
                parts.append("-")
            parts.extend(c.waker_user)
            parts.append(c.waker_comm)
            lines.append(f"{';'.join(parts)} {c.value}")
        else:
            lines.append(f"{';'.join(parts)}; {c.value}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path,render", [(TEXT, render_text), (FOLDED, render_folded)],
                         ids=["text", "folded"])
def test_capture_files_match_the_cases(path: Path, render) -> None:
    expected = render(CASES)
    if os.environ.get("OFFWAKE_UPDATE_CLASSIFY"):
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(expected, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path} is out of date with tests/unit/test_classify.py CASES; regenerate it with "
        "OFFWAKE_UPDATE_CLASSIFY=1 python -m pytest tests/unit/test_classify_bcc.py")


def _load(path: Path) -> Dict[int, Wakeup]:
    report = analyze(load_input(str(path)))
    by_value: Dict[int, Wakeup] = {}
    for w in report.wakeups:
        assert w.edge.total_us not in by_value, f"two edges with value {w.edge.total_us}"
        by_value[w.edge.total_us] = w
    return by_value


@pytest.mark.parametrize("path", [TEXT, FOLDED], ids=["text", "folded"])
def test_bcc_capture_classifies_like_the_cases(path: Path) -> None:
    got = _load(path)
    assert sorted(got) == sorted(c.value for c in CASES)
    wrong = []
    for case in CASES:
        w = got[case.value]
        seen = (w.category, w.cause, w.detail)
        if seen != (case.category, case.cause, case.detail):
            wrong.append(f"{case.name}: got {seen} by rule {w.rule}, "
                         f"want {(case.category, case.cause, case.detail)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", [TEXT, FOLDED], ids=["text", "folded"])
def test_bcc_capture_names_and_roles(path: Path) -> None:
    got = _load(path)
    by_name = {c.name: c for c in CASES}
    post = got[by_name["eventfd-cross-thread-post"].value]
    assert post.target.role == "worker"
    assert post.waker is not None and post.waker.role == "main"
    idle = got[by_name["timer-epoll-timeout-idle-cpu"].value]
    assert idle.waker is not None and idle.waker.name == "kernel: swapper/0"
    dns = got[by_name["udp-dns-answer-over-veth"].value]
    assert dns.waker is not None and dns.waker.name == "coredns" and dns.waker.role is None
    preempted = got[by_name["preempt-return-to-user-6x"].value]
    assert preempted.waker is None and preempted.edge.preempted
