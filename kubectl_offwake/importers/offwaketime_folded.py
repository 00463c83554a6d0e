"""Parses BCC ``offwaketime -f`` (folded) output into a Recording.

One line per entry, the value in microseconds after the last space::

    target;<user root..leaf>;-;<kernel root..leaf>;--;<waker kernel leaf..root>;-;
        <waker user leaf..root>;waker 1234                     (one line, wrapped here)

``-`` appears only with ``-d`` and only when both halves of that stack exist; a missing half
is printed as ``[Missed User Stack]`` (newer BCC appends the error number) or
``[Missed Kernel Stack]``. A preemption has no waker: ``target;...;--; 1234``. BCC of 2016
printed kernel stacks only, with ``-`` as the target/waker separator and no ``--``.
Frames cannot contain ``;``; comms can contain spaces.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ..analysis.model import Edge, Recording, Stack
from .bcc_common import (
    MODE_DELIMITED,
    MODE_KERNEL,
    MODE_UNKNOWN,
    EdgeTable,
    build_stack,
    clean_frame,
    extract_warnings,
    finish_import,
    respell_markers,
)

_SEPARATOR = "--"
_OLD_SEPARATOR = "-"
_FOLDED_LINE = re.compile(r"^[^;\n]*;[^\n]* \d+\s*$")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_UNSEEN = object()


def looks_like_folded(line: str) -> bool:
    """True when a line has the shape ``a;b;... N``."""
    return bool(_FOLDED_LINE.match(line))


class _StackCache:
    """Folded files repeat the same stack text on many lines: parse each text once."""

    def __init__(self, recording: Recording, mode: str, old: bool) -> None:
        self.recording = recording
        self.mode = mode
        self.old = old
        self._cache: Dict[Tuple[str, bool], Any] = {}

    def get(self, text: str, kernel_first: bool) -> Optional[Stack]:
        """The stack printed as ``text``, or None when the text holds control characters."""
        key = (text, kernel_first)
        stack = self._cache.get(key, _UNSEEN)
        if stack is _UNSEEN:
            # Checked once per distinct text, not once per line: this is the hot loop.
            if _CONTROL.search(text):
                self._cache[key] = None
                return None
            parts = respell_markers(text.split(";")) if text else []
            frames = [clean_frame(p) for p in parts]
            frames = [f for f in frames if f]
            mode = MODE_KERNEL if self.old else self.mode
            stack = build_stack(self.recording.stacks, frames, mode, kernel_first)
            self._cache[key] = stack
        return stack


def parse_folded(text: str, name: str = "input") -> Recording:
    """Every well-formed line of ``text``; damaged lines are skipped and counted."""
    text, bcc_notes = extract_warnings(text)
    lines = text.split("\n")  # not splitlines(): U+2028 and friends are not line ends here
    delimited = any(";-;" in line and ";--;" in line for line in lines)
    mode = MODE_DELIMITED if delimited else MODE_UNKNOWN
    recording = Recording()
    recording.source.update({"kind": "offwaketime-folded", "input": name, "delimited": delimited})
    edges = EdgeTable(recording)
    caches = {old: _StackCache(recording, mode, old) for old in (False, True)}
    corrupt = 0
    notes: List[str] = []
    for line in lines:
        if not line or line.isspace():
            continue
        parsed = _parse_line(line)
        if parsed is None:
            stripped = line.strip()
            if stripped.startswith("WARNING:"):
                notes.append("offwaketime: " + stripped[len("WARNING:"):].strip())
            elif stripped != "^C":
                corrupt += 1
            continue
        target_comm, target_text, waker_text, waker_comm, value, old = parsed
        cache = caches[old]
        target_stack = cache.get(target_text, kernel_first=False)
        preempted = not waker_comm and not waker_text.strip(";")
        waker_stack = None if preempted else cache.get(waker_text, kernel_first=True)
        if target_stack is None or (waker_stack is None and not preempted):
            corrupt += 1
            continue
        target = edges.task(target_comm, None)
        if preempted:
            edges.add(Edge(target, target_stack, None, None, value, preempted=True))
        else:
            edges.add(Edge(target, target_stack, edges.task(waker_comm, None), waker_stack,
                           value))
    notes.extend(bcc_notes)
    return finish_import(
        recording, notes, corrupt,
        nothing_read=f"{name} has no offwaketime -f entries; pass offwaketime's -f output",
        all_corrupt=(f"none of the {corrupt} line(s) of {name} is an offwaketime -f entry "
                     "('target;...;--;...;waker MICROSECONDS'); pass offwaketime's -f output"),
    )


def _parse_line(line: str) -> Optional[Tuple[str, str, str, str, int, bool]]:
    """(target comm, target frames, waker frames, waker comm, value, old form) or None.

    Works by index on the line rather than on copies of it: a 100k-line capture runs
    this loop over hundreds of megabytes.
    """
    if line and line[-1].isspace():
        line = line.rstrip()
    space = line.rfind(" ")
    value = line[space + 1:]
    if space < 0 or not value.isdigit():
        return None
    first = line.find(";", 0, space)
    last = line.rfind(";", 0, space)
    if first < 0 or first == last:
        return None
    target_comm, waker_comm = line[:first], line[last + 1:space]
    if not (target_comm.isprintable() and waker_comm.isprintable()):
        return None
    # The separator is the frame "--" between the comms' semicolons (either may bound it).
    at = line.find(";--;", first, last + 1)
    width = 4
    old = False
    if at < 0:
        at = line.find(";-;", first, last + 1)  # 2016: "-" separated target and waker
        if at < 0:
            return None
        old = True
        width = 3
    target_text = line[first + 1:at]
    waker_text = line[at + width:last] if at + width <= last else ""
    return target_comm, target_text, waker_text, waker_comm, int(value), old
