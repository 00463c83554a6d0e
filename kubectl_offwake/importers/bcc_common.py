"""What BCC offwaketime's text and folded outputs share: frames, stack halves, edges.

offwaketime prints four stacks per entry and never says where kernel frames end and user
frames begin unless it ran with ``-d``. Both printers put the two halves of one stack in a
fixed order (kernel before user in one orientation, user before kernel in the other), so a
stack is rebuilt from the printed frames, the ``-`` delimiter when present, and the
``[Missed ... Stack]`` markers (which sit exactly where the missing half would be).
"""

from __future__ import annotations

import ast
import re
from typing import Dict, List, Optional, Sequence, Tuple

from ..analysis.model import Edge, Recording, Stack, StackTable, Task
from ..errors import BadInput

#: How the capture says its stacks are split, decided once per file.
MODE_UNKNOWN = "unknown"  # user + kernel without -d: the boundary is not printed
MODE_DELIMITED = "delimited"  # -d: a lone half (no delimiter printed) is the kernel half
MODE_KERNEL = "kernel"  # -K, and BCC before user stacks existed
MODE_USER = "user"  # -U

DELIMITER = "-"
_MISSED = re.compile(r"^\[Missed (User|Kernel) Stack\]")
_SPELLED = {"[Missed User Stack]", "[Missed Kernel Stack]"}


def clean_frame(frame: str) -> str:
    """One printed frame as a plain symbol: strip padding and Python bytes-literal quoting.

    BCC on Python 3 before 0.10 printed ``b.ksym(addr)`` unconverted, so each frame reads
    ``b'tcp_v4_rcv'``.
    """
    frame = frame.strip()
    if len(frame) >= 3 and frame[0] == "b" and frame[1] in "'\"" and frame[-1] == frame[1]:
        inner = frame[2:-1]
        if "\\" not in inner:
            return inner
        try:
            value = ast.literal_eval(frame)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return inner
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return frame


def respell_markers(parts: List[str]) -> List[str]:
    """Undo an old BCC bug that printed ``[Missed User Stack]`` one character per frame."""
    if "[" not in parts:
        return parts
    out: List[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == "[":
            for marker in _SPELLED:
                chunk = parts[i:i + len(marker)]
                if len(chunk) == len(marker) and all(len(c) == 1 for c in chunk) \
                        and "".join(chunk) == marker:
                    out.append(marker)
                    i += len(marker)
                    break
            else:
                out.append(parts[i])
                i += 1
            continue
        out.append(parts[i])
        i += 1
    return out


def build_stack(
    table: StackTable, printed: Sequence[str], mode: str, kernel_first: bool
) -> Stack:
    """Intern one stack from its printed frames.

    ``kernel_first`` is true when the printer put the kernel half first with leaf frames
    first (text target, folded waker); otherwise the user half came first with root
    frames first (text waker, folded target), which is the same list reversed.
    """
    items = list(printed) if kernel_first else list(reversed(printed))
    kernel_at = user_at = -1
    for i, frame in enumerate(items):
        match = _MISSED.match(frame) if frame.startswith("[Missed ") else None
        if match is not None:
            if match.group(1) == "Kernel":
                kernel_at = i
            else:
                user_at = i
    if DELIMITER in items:
        at = items.index(DELIMITER)
        kernel, user = items[:at], items[at + 1:]
    elif kernel_at >= 0 and user_at >= 0:
        kernel, user = [], items
    elif kernel_at >= 0:  # the marker stands where the kernel half would be
        kernel, user = items[:kernel_at], items[kernel_at + 1:]
    elif user_at >= 0:
        kernel, user = items[:user_at], items[user_at + 1:]
    elif mode in (MODE_KERNEL, MODE_DELIMITED):
        kernel, user = items, []
    elif mode == MODE_USER:
        kernel, user = [], items
    else:
        return table.intern(items, None, None)
    missing = _MISSING_NAMES.get((kernel_at >= 0, user_at >= 0))
    if missing is not None or DELIMITER in user:
        kernel = [f for f in kernel if not _MISSED.match(f)]
        user = [f for f in user if f != DELIMITER and not _MISSED.match(f)]
    return table.intern(kernel + user, len(kernel), missing)


_MISSING_NAMES = {(True, True): "both", (True, False): "kernel", (False, True): "user"}


class EdgeTable:
    """Merges edges by :meth:`Edge.key` in O(1) and keeps first-seen order."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self._by_key: Dict[tuple, Edge] = {}
        self._tasks: Dict[tuple, Task] = {}

    def task(self, comm: str, tid: Optional[int]) -> Task:
        key = (comm, tid)
        task = self._tasks.get(key)
        if task is None:
            task = Task(comm=comm, pid=None, tid=tid)
            self._tasks[key] = task
        return task

    def add(self, edge: Edge) -> None:
        """Merge ``edge``; its tasks come from :meth:`task` and its stacks from the
        recording's StackTable, so object identity is value identity and the key is cheap."""
        key = (id(edge.target), id(edge.target_stack), id(edge.waker), id(edge.waker_stack),
               edge.preempted, id(edge.preempted_by))
        found = self._by_key.get(key)
        if found is None:
            self._by_key[key] = edge
            self.recording.edges.append(edge)
        else:
            found.merge(edge)


# offwaketime prints this to stderr after the stacks. Captured with ``2>&1`` into a file,
# stdout is block-buffered and stderr is not, so the line lands at an arbitrary byte of the
# stacks, often in the middle of a frame.
_BCC_WARNING = re.compile(
    r"WARNING: \d+ stack traces (?:lost and )?could not be displayed\."
    r"(?: Consider increasing --stack-storage-size\.)?\n?"
)


def extract_warnings(text: str) -> Tuple[str, List[str]]:
    """Remove offwaketime's own WARNING lines wherever they landed; return them as notes."""
    if "WARNING: " not in text:
        return text, []
    notes: List[str] = []

    def keep(match: re.Match) -> str:
        notes.append("offwaketime: " + match.group(0)[len("WARNING: "):].strip())
        return ""

    return _BCC_WARNING.sub(keep, text), notes


_LOST_STACKS = re.compile(r"^offwaketime: (\d+) stack traces")


def corrupt_note(count: int, what: str = "block") -> str:
    return f"skipped {count} corrupt {what}(s)"


def finish_import(recording: Recording, notes: List[str], corrupt: int, *,
                  nothing_read: str, all_corrupt: str) -> Recording:
    """The common end of both BCC importers: what was skipped becomes the first warning, and
    a capture that yielded no edge at all is bad input (``all_corrupt`` when parts of it
    were unreadable, else ``nothing_read``)."""
    if corrupt:
        notes.insert(0, corrupt_note(corrupt))
    if not recording.edges:
        raise BadInput(all_corrupt if corrupt else nothing_read)
    recording.warnings.extend(notes)
    lost = sum(int(m.group(1)) for m in map(_LOST_STACKS.match, notes) if m)
    if lost:  # a loss counter like the collector's, for the loss finding
        recording.lost["stack_lost"] = lost
    return recording
