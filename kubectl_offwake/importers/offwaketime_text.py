"""Parses BCC ``offwaketime``'s default text output into a Recording.

What BCC prints, per entry (tools/offwaketime.py; oldest form in brackets)::

    Tracing blocked time (us) by user + kernel off-CPU and waker stack... Hit Ctrl-C to end.

        waker:           kubelet 606          [waker: COMM, no pid]
        <waker user frames, root first>       [ffffffff81785085 schedule]
        -                                     (only with -d, when both halves exist)
        <waker kernel frames, root first>
        --               --                   [-                -]
        <target kernel frames, leaf first>
        -
        <target user frames, leaf first>
        target:          wrk:worker_1 4450    (the printed pid is the thread id)
            2066849                           (microseconds)

A waker line with no comm (``waker:            0``) and no frames is a preemption: the
target was switched out runnable and nobody woke it. BCC of 2017-2018 printed the two pids
swapped (waker: target's tid and vice versa); the file does not say which BCC wrote it.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from ..analysis.model import Edge, Recording, Stack
from .bcc_common import (
    DELIMITER,
    MODE_DELIMITED,
    MODE_KERNEL,
    MODE_UNKNOWN,
    MODE_USER,
    EdgeTable,
    build_stack,
    clean_frame,
    extract_warnings,
    finish_import,
)

BANNER = re.compile(
    r"^Tracing blocked time \(us\) by (?P<context>.+?) off-CPU and waker stack"
    r"(?: for (?P<secs>\d+) secs\.)?"
)
_ADDRESS = re.compile(r"^(?:0x)?[0-9a-f]{8,16}\s+(?=\S)")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_NOISE = ("^C", "Detaching...")


class _Block:
    __slots__ = ("waker", "waker_frames", "separator", "target", "target_frames", "value",
                 "delimited")

    def __init__(self, waker: str) -> None:
        self.waker = waker
        self.waker_frames: List[str] = []
        self.separator: Optional[str] = None
        self.target: Optional[str] = None
        self.target_frames: List[str] = []
        self.value: Optional[int] = None
        self.delimited = False


def looks_like_text(line: str) -> bool:
    """True when a line could only come from offwaketime's text printer."""
    stripped = line.strip()
    return bool(BANNER.match(stripped)) or stripped.startswith(("waker:", "target:"))


def parse_text(text: str, name: str = "input") -> Recording:
    """Every whole block of ``text``; damaged blocks are skipped and counted."""
    text, bcc_notes = extract_warnings(text)
    blocks, corrupt, notes, banner = _split_blocks(text)
    notes.extend(bcc_notes)
    recording = Recording()
    source: dict = {"kind": "offwaketime-text", "input": name}
    mode = MODE_UNKNOWN
    if banner is not None:
        source["banner"] = banner.group(0)
        context = banner.group("context")
        source["stacks"] = context
        if banner.group("secs"):
            source["duration_s"] = int(banner.group("secs"))
        if context == "kernel":
            mode = MODE_KERNEL
        elif context == "user":
            mode = MODE_USER
    if any(b.separator == "old" for b in blocks):
        mode = MODE_KERNEL  # BCC of 2016 printed kernel stacks only
    elif mode == MODE_UNKNOWN and any(b.delimited for b in blocks):
        mode = MODE_DELIMITED
    source["delimited"] = mode == MODE_DELIMITED
    recording.source.update(source)
    edges = EdgeTable(recording)
    stacks = _Stacks(recording, mode)
    for block in blocks:
        edges.add(_edge(block, stacks, edges))
    return finish_import(
        recording, notes, corrupt,
        nothing_read=(f"{name} is offwaketime output without any stacks; trace for longer, "
                      "and capture stdout after the tool printed its summary"),
        all_corrupt=(f"{name} looks like offwaketime output but none of its {corrupt} "
                     "block(s) could be read; pass the tool's complete output"),
    )


def _split_blocks(text: str) -> Tuple[List[_Block], int, List[str], Optional[re.Match]]:
    """Cut the text into complete blocks; count runs of anything else as corrupt blocks."""
    blocks: List[_Block] = []
    notes: List[str] = []
    corrupt = 0
    banner: Optional[re.Match] = None
    block: Optional[_Block] = None
    state = "out"
    in_garbage = False
    seen_structure = False

    def fail() -> None:
        nonlocal block, state, corrupt, in_garbage
        corrupt += 1
        block = None
        state = "out"
        in_garbage = True

    # split("\n"), not splitlines(): a form feed or U+2028 inside a symbol is not a line end
    for raw in text.split("\n"):
        stripped = raw.strip()
        if state == "value":
            assert block is not None
            if stripped.isdigit():
                block.value = int(stripped)
                blocks.append(block)
                block = None
                state = "out"
                continue
            fail()
            # fall through: the line may start the next block
        if not stripped:
            if state != "out":
                fail()
            in_garbage = False
            continue
        if state == "out":
            if stripped.startswith("waker:"):
                block = _Block(stripped[len("waker:"):])
                state = "waker"
                in_garbage = False
                seen_structure = True
                continue
            if stripped.startswith("WARNING:"):
                notes.append("offwaketime: " + stripped[len("WARNING:"):].strip())
                continue
            match = BANNER.match(stripped)
            if match:
                banner = banner or match
                seen_structure = True
                continue
            if stripped.startswith(_NOISE):
                continue
            if not seen_structure:
                continue  # compiler chatter before the banner
            if not in_garbage:
                corrupt += 1
                in_garbage = True
            continue
        assert block is not None
        if not stripped.isprintable() and _CONTROL.search(stripped):
            fail()
            continue
        if stripped.startswith("waker:"):
            fail()
            in_garbage = False
            block = _Block(stripped[len("waker:"):])
            state = "waker"
            continue
        # Only a line starting with "-" can be a separator: split() nothing else.
        parts = stripped.split() if stripped[0] == "-" else None
        if state == "waker":
            if parts == ["--", "--"]:
                block.separator = "new"
                state = "target"
            elif parts == ["-", "-"]:
                block.separator = "old"
                state = "target"
            elif stripped.startswith("target:"):
                fail()
            else:
                if stripped == DELIMITER:
                    block.delimited = True
                block.waker_frames.append(stripped)
            continue
        # state == "target"
        if stripped.startswith("target:"):
            block.target = stripped[len("target:"):]
            state = "value"
            continue
        if parts in (["--", "--"], ["-", "-"]):
            fail()
            continue
        if stripped == DELIMITER:
            block.delimited = True
        block.target_frames.append(stripped)
    if state != "out":
        corrupt += 1  # cut off mid-block
    return blocks, corrupt, notes, banner


def _who(field: str, with_pid: bool) -> Tuple[str, Optional[int]]:
    """``COMM PID`` (the pid is a thread id); comms may contain spaces."""
    text = field.strip()
    if not with_pid:
        return text, None
    comm, _, last = text.rpartition(" ")
    if last.isdigit():
        return comm.strip(), int(last)
    if text.isdigit():
        return "", int(text)
    return text, None


def _frames(lines: List[str], strip_address: bool) -> List[str]:
    out = []
    for line in lines:
        if strip_address:
            line = _ADDRESS.sub("", line, count=1)
        frame = clean_frame(line)
        if frame:
            out.append(frame)
    return out


class _Stacks:
    """Captures print the same stacks in many blocks: clean and split each form once."""

    def __init__(self, recording: Recording, mode: str) -> None:
        self.recording = recording
        self.mode = mode
        self._cache: Dict[Tuple[Tuple[str, ...], bool, bool], Stack] = {}

    def get(self, lines: List[str], kernel_first: bool, old: bool) -> Stack:
        key = (tuple(lines), kernel_first, old)
        stack = self._cache.get(key)
        if stack is None:
            frames = _frames(lines, strip_address=old)
            stack = build_stack(self.recording.stacks, frames, self.mode, kernel_first)
            self._cache[key] = stack
        return stack


def _edge(block: _Block, stacks: _Stacks, edges: EdgeTable) -> Edge:
    new = block.separator == "new"
    waker_comm, waker_tid = _who(block.waker, new)
    target_comm, target_tid = _who(block.target or "", new)
    target = edges.task(target_comm, target_tid)
    target_stack = stacks.get(block.target_frames, kernel_first=True, old=not new)
    assert block.value is not None
    if not waker_comm and not block.waker_frames:
        return Edge(target, target_stack, None, None, block.value, preempted=True)
    waker = edges.task(waker_comm, waker_tid)
    waker_stack = stacks.get(block.waker_frames, kernel_first=False, old=not new)
    return Edge(target, target_stack, waker, waker_stack, block.value)
