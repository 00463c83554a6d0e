"""``--format speedscope``: a file for https://www.speedscope.app (its file-format schema).

One "sampled" profile per wakeup category, largest first, so the profile picker reads like
the terminal table; every distinct (waker stack, target stack) is one sample whose weight
is its off-CPU time in microseconds. Frames are shared between profiles.

A sample is a wake chain, root first, as ``flamegraph.pl --colors=chain`` draws it: the
target thread, its user frames root..leaf, its kernel frames root..leaf, a ``--`` frame,
then the waker's kernel frames leaf..root, its user frames leaf..root and the waker's name
on top. Reading a flame upward therefore goes "this thread slept here, and was woken by
this code path of this process". Preemptions end in ``--`` and a "preempted by ..." frame.
Kernel frames carry ``file: "[kernel]"`` so speedscope's detail view tells the halves apart.
Thread and waker frames are named as in every other view (:mod:`..analysis.vocabulary`);
names are kept exact, with characters a terminal would act on written as JSON escapes.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from ..analysis.categories import CATEGORY_BY_ID
from ..analysis.model import Stack
from ..analysis.report import Report, Wakeup
from ..analysis.vocabulary import SEPARATOR, spans_pods, target_names, thread_frame, woken_by
from ..untrusted import json_escaped
from . import RenderOptions

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
EXPORTER = "kubectl-offwake"
KERNEL_FILE = "[kernel]"

_FrameKey = Tuple[str, Optional[str]]


class _Frames:
    """The shared frame table: one index per distinct (name, file).

    Samples are kept as JSON text: a chain is mostly two stacks, and each stack's indices
    are encoded once (stacks are interned and repeat across many chains).
    """

    def __init__(self) -> None:
        self.index: Dict[_FrameKey, int] = {}
        self.frames: List[Dict[str, str]] = []
        self._by_file: Dict[Optional[str], Dict[str, int]] = {None: {}, KERNEL_FILE: {}}
        self._stacks: Dict[Tuple[int, bool], str] = {}
        self._labels: Dict[str, str] = {}

    def get(self, name: str, file: Optional[str] = None) -> int:
        key = (name, file)
        found = self.index.get(key)
        if found is None:
            found = len(self.frames)
            self.index[key] = found
            self._by_file.setdefault(file, {})[name] = found
            self.frames.append({"name": name, "file": file} if file else {"name": name})
        return found

    def _all(self, names: Sequence[str], file: Optional[str]) -> List[int]:
        """Indices of ``names`` (one file), new names numbered in order of appearance."""
        table = self._by_file[file]
        for name in [name for name in names if name not in table]:
            if name not in table:  # (a name can repeat within a stack)
                self.get(name, file)
        return list(map(table.__getitem__, names))

    def label(self, name: str) -> str:
        """``,INDEX`` of a user-space frame by name (memoised: labels repeat per chain)."""
        found = self._labels.get(name)
        if found is None:
            found = self._labels[name] = f",{self.get(name)}"
        return found

    def stack(self, stack: Stack, is_target: bool) -> str:
        """``,I,J,...`` for a stack's part of a chain (memoised; stacks are interned)."""
        key = (id(stack), is_target)
        found = self._stacks.get(key)
        if found is None:
            depth = len(stack.frames) if stack.kernel_depth is None else stack.kernel_depth
            kernel = self._all(stack.frames[:depth], KERNEL_FILE)
            user = self._all(stack.frames[depth:], None)
            # A target reads root first (user root..leaf, kernel root..leaf); a waker
            # continues upward from the wake (kernel leaf..root, user leaf..root).
            indices = user[::-1] + kernel[::-1] if is_target else kernel + user
            found = "," + ",".join(map(str, indices)) if indices else ""
            self._stacks[key] = found
        return found


_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    """The speedscope document as compact JSON, written from pre-encoded samples (100k
    chains of ~60 frames would otherwise be 6M list items)."""
    frames = _Frames()
    several_pods = spans_pods(report.wakeups)
    profiles = [_profile(category, wakeups, frames, several_pods)
                for category, wakeups in _by_category(report)]
    write = _escaping_writer(out)
    write(f'{{"$schema":{_dumps(SCHEMA_URL)},"name":{_dumps(_name(report, options))},'
              f'"exporter":{_dumps(EXPORTER)},"activeProfileIndex":0,'
              f'"shared":{{"frames":{_dumps(frames.frames)}}},"profiles":[')
    for i, (meta, samples, weights) in enumerate(profiles):
        text = _dumps(meta)
        write(("," if i else "") + text[:-1])
        write(',"samples":[')
        for start in range(0, len(samples), _CHUNK):
            write(("," if start else "") + ",".join(samples[start:start + _CHUNK]))
        write(f'],"weights":{_dumps(weights)}}}')
    write("]}\n")


def _escaping_writer(out: TextIO) -> Callable[[str], object]:
    """``out.write`` of JSON text with the characters a terminal acts on escaped."""
    return lambda text: out.write(json_escaped(text))


#: Samples written per ``out.write``.
_CHUNK = 5_000


def _by_category(report: Report) -> List[Tuple[str, List[Wakeup]]]:
    """Wakeups with time, per category, categories in the report's order (largest first)."""
    by_category: Dict[str, List[Wakeup]] = {}
    for wakeup in report.wakeups:
        if wakeup.edge.total_us > 0:
            by_category.setdefault(wakeup.category, []).append(wakeup)
    order = [g.key for g in report.by_category if g.key in by_category]
    order += sorted(set(by_category) - set(order))
    return [(category, by_category[category]) for category in order]


def _profile(category: str, wakeups: List[Wakeup], frames: _Frames,
             several_pods: bool) -> Tuple[Dict[str, Any], List[str], List[int]]:
    """(the profile's fields before ``samples``, the samples as JSON, the weights)."""
    samples = [_chain(wakeup, frames, several_pods) for wakeup in wakeups]
    weights = [wakeup.edge.total_us for wakeup in wakeups]
    known = CATEGORY_BY_ID.get(category)
    meta = {
        "type": "sampled",
        "name": f"{known.title} ({category})" if known else category,
        "unit": "microseconds",
        "startValue": 0,
        "endValue": sum(weights),
    }
    return meta, samples, weights


def _chain(wakeup: Wakeup, frames: _Frames, several_pods: bool) -> str:
    """One sample as JSON: thread, target stack, ``--``, waker stack and who woke it (or
    the preemptor). Frame indices are handed out in this order, the first time a frame is
    seen."""
    edge = wakeup.edge
    thread = frames.label(thread_frame(wakeup.target, several_pods))
    target = frames.stack(edge.target_stack, True)
    separator = frames.label(SEPARATOR)
    if edge.preempted or wakeup.waker is None or edge.waker_stack is None:
        return f"[{thread[1:]}{target}{separator}{frames.label(woken_by(wakeup))}]"
    waker = frames.stack(edge.waker_stack, False)
    return f"[{thread[1:]}{target}{separator}{waker}{frames.label(woken_by(wakeup))}]"


def _name(report: Report, options: RenderOptions) -> str:
    targets = target_names(report)
    return f"{options.title}: {', '.join(targets)}" if targets else options.title
