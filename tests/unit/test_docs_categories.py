"""docs/categories.md: every category of the table, each with a real example as recorded.

An example names a recording under tests/data/classify/, the woken thread, who woke it (as
every view names it) and the kernel stack that decided, leaf first: a wakeup of that
category with that thread, that waker and a stack starting with those frames must be in
the recording. A category without an example must say why (KNOWN_GAPS).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.categories import CATEGORIES
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.analysis.vocabulary import woken_by
from kubectl_offwake.importers import load_input

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "categories.md"
RECORDINGS = ROOT / "tests" / "data" / "classify"
#: Categories no recording here shows, and the words the doc gives for it.
KNOWN_GAPS = {"tcp-connect": "No real example yet"}

_EXAMPLE = re.compile(r"^Real example — `(?P<file>[^`]+)`: `(?P<thread>[^`]+)` ← "
                      r"`(?P<by>[^`]+)`\n\n```text\n(?P<frames>.+)\n```$", re.M)


def sections() -> Dict[str, str]:
    parts = re.split(r"^## `([a-z-]+)`: .*$", DOC.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@cache
def report(name: str) -> Report:
    return analyze(load_input(str(RECORDINGS / name)))


def test_every_category_is_documented_once_in_table_order() -> None:
    assert list(sections()) == [c.id for c in CATEGORIES]


@pytest.mark.parametrize("category", [c.id for c in CATEGORIES])
def test_each_example_is_in_its_recording_as_shown(category: str) -> None:
    text = sections()[category]
    examples = list(_EXAMPLE.finditer(text))
    if category in KNOWN_GAPS:
        assert not examples and KNOWN_GAPS[category] in text
        return
    assert len(examples) == 1, f"{category}: no 'Real example' (or more than one)"
    m = examples[0]
    frames: Tuple[str, ...] = tuple(m.group("frames").split(" ← "))
    found: List[str] = []
    for w in report(m.group("file")).wakeups:
        if w.category != category or w.target.comm != m.group("thread"):
            continue
        stack = w.edge.target_stack if w.edge.preempted else w.edge.waker_stack
        kernel = stack.kernel_frames if stack is not None else ()
        found.append(f"{woken_by(w)}: {' ← '.join(kernel[:len(frames) + 2])}")
        if woken_by(w) == m.group("by") and kernel[:len(frames)] == frames:
            return
    pytest.fail(f"{category}: no such wakeup in {m.group('file')}; its {m.group('thread')} "
                "wakeups of that category are:\n" + "\n".join(found[:10]))
