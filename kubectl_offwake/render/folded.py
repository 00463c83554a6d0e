"""``--format folded``: one line per (target stack, waker stack), as BCC ``offwaketime -f``.

The same lines feed Brendan Gregg's ``flamegraph.pl --colors=chain`` (the waker half drawn
above the target, in blue) and ``kubectl offwake report`` (which reads BCC's folded form),
so a saved folded file can be re-analysed. A line is::

    target comm;target user root..leaf;-;target kernel root..leaf;--;
        waker kernel leaf..root;-;waker user leaf..root;waker comm VALUE

with VALUE the off-CPU time in whole microseconds, exactly as ``offwaketime -f -d`` prints
it. Decisions, and why:

- The ``-`` delimiter between kernel and user frames is emitted (BCC's ``-d``) whenever a
  stack has both halves and the boundary is known. A re-import then knows which frames are
  kernel frames (classification reads the kernel frames first), and flame graphs show the
  boundary as a thin ``-`` frame, as they do for ``offwaketime -df``. Stacks whose boundary
  the source never knew (BCC text without ``-d``) are written as one run of frames.
- A half the tracer failed to capture is written as BCC writes it: ``[Missed User Stack]``
  or ``[Missed Kernel Stack]``, and then there is no delimiter.
- Preemptions have no waker: the waker part is empty, so the line ends in ``--;`` before the
  value, exactly what ``offwaketime`` prints for a wakeup whose waker it did not see. The
  preemption is still recognisable from the target's kernel frames.
- Names (frames and comms) come from a node and can hold anything. They are neutralized
  (:func:`~kubectl_offwake.untrusted.neutralize`: a line break, an escape sequence or a bidi
  override is written out as ``\\x0a``, ``\\x1b``, ``\\u202e``), and ``;`` (C++ templates
  and Go closures have it) becomes ``:``, so every consumer splits the line the same way and
  the file is safe on a terminal. Spaces stay: the value is what follows the *last* space.
  Written this way, a folded file re-imports to the same names and renders the same lines.
- The comms are the tasks' own, as ``offwaketime`` prints them, including for a wake that
  ran in an interrupt (the other views name the interrupt there and call this task the
  bystander): a re-import classifies such a wake from its stack again.
- Identical lines (the same stacks seen for different threads with the same comm) are
  summed, lines with no time are dropped, and lines are sorted, so the output is stable.
- Waker frames are not suffixed with ``_[w]``. ``flamegraph.pl --colors=chain`` would paint
  such frames aqua, but BCC never writes the suffix and a re-import would then see
  ``try_to_wake_up_[w]``; so, exactly like ``offwaketime -f`` output, the whole chain is
  drawn in the chain palette's blue and the ``--`` frame marks where the waker begins.
  (``--format svg``/``html`` draw the two halves in different colours.)
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, TextIO, Tuple

from ..analysis.model import Stack
from ..analysis.report import Report, Wakeup
from ..analysis.vocabulary import SEPARATOR
from ..untrusted import needs_neutralizing, neutralize
from . import RenderOptions

DELIMITER = "-"
MISSED_USER = "[Missed User Stack]"
MISSED_KERNEL = "[Missed Kernel Stack]"


#: Lines written per ``out.write``: big reports are never held twice in memory.
CHUNK_LINES = 2_000


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    lines = _sorted_lines(report.wakeups)
    for start in range(0, len(lines), CHUNK_LINES):
        pieces: List[str] = []
        for line, value in lines[start:start + CHUNK_LINES]:
            pieces += (line, " ", str(value), "\n")  # no per-line copy of a long line
        out.write("".join(pieces))


def _sorted_lines(wakeups: Iterable[Wakeup]) -> List[Tuple[str, int]]:
    """(line without its value, total µs), sorted by line, equal lines summed.

    Wakeups are summed by the pieces of their line first: the pieces are shared strings
    (one per stack half and comm) whose hashes Python keeps, so a 100k-edge report never
    hashes its few hundred megabytes of lines; only the distinct lines are joined.
    """
    groups: Dict[Tuple[str, str, str, str], int] = {}
    halves: Dict[Tuple[int, bool], str] = {}  # rendered stack halves; stacks are interned
    comms: Dict[str, str] = {}
    for wakeup in wakeups:
        edge = wakeup.edge
        value = edge.total_us
        if value <= 0:
            continue
        stack = edge.target_stack
        target = halves.get((id(stack), True))
        if target is None:
            target = halves[(id(stack), True)] = _half_line(target_frames(stack))
        comm = wakeup.target.comm
        target_comm = comms.get(comm)
        if target_comm is None:
            target_comm = comms[comm] = clean(comm)
        waker = waker_comm = ""
        if not (edge.preempted or wakeup.waker is None or edge.waker_stack is None):
            stack = edge.waker_stack
            half = halves.get((id(stack), False))
            if half is None:
                half = halves[(id(stack), False)] = _half_line(waker_frames(stack))
            waker = half
            comm = wakeup.waker.comm
            found = comms.get(comm)
            if found is None:
                found = comms[comm] = clean(comm)
            waker_comm = found
        key = (target_comm, target, waker, waker_comm)
        groups[key] = groups.get(key, 0) + value
    lines = sorted([(f"{tc};{th}{SEPARATOR};{wh}{wc}", value)
                    for (tc, th, wh, wc), value in groups.items()])
    merged: List[Tuple[str, int]] = []
    for line, value in lines:  # different pieces can still make the same line
        if merged and merged[-1][0] == line:
            merged[-1] = (line, merged[-1][1] + value)
        else:
            merged.append((line, value))
    return merged


def _half_line(frames: List[str]) -> str:
    """A stack's half of the line, each frame followed by ``;``."""
    return ";".join(frames) + ";" if frames else ""


def target_frames(stack: Stack) -> List[str]:
    """The target's frames as BCC folds them: user root..leaf, ``-``, kernel root..leaf."""
    if stack.kernel_depth is None:
        return _clean_all(reversed(stack.frames))
    user = _half(stack.user_frames, stack.missing, "user", MISSED_USER, reverse=True)
    kernel = _half(stack.kernel_frames, stack.missing, "kernel", MISSED_KERNEL, reverse=True)
    return _join(user, kernel, stack)


def waker_frames(stack: Stack) -> List[str]:
    """The waker's frames as BCC folds them: kernel leaf..root, ``-``, user leaf..root."""
    if stack.kernel_depth is None:
        return _clean_all(stack.frames)
    kernel = _half(stack.kernel_frames, stack.missing, "kernel", MISSED_KERNEL, reverse=False)
    user = _half(stack.user_frames, stack.missing, "user", MISSED_USER, reverse=False)
    return _join(kernel, user, stack)


def _half(frames: Iterable[str], missing: Optional[str], half: str, marker: str,
          reverse: bool) -> List[str]:
    if missing in (half, "both"):
        return [marker]
    cleaned = _clean_all(frames)
    if reverse:
        cleaned.reverse()
    return cleaned


def _join(first: List[str], second: List[str], stack: Stack) -> List[str]:
    """BCC writes the delimiter only when both halves were captured and are not empty."""
    if stack.missing is None and first and second:
        return [*first, DELIMITER, *second]
    return [*first, *second]


def _clean_all(frames: Iterable[str]) -> List[str]:
    """:func:`clean` of every frame; one scan of the joined names finds the (rare) need."""
    found = list(frames)
    joined = " ".join(found)
    if ";" in joined or needs_neutralizing(joined):
        return [clean(f) for f in found]
    return found


def clean(name: str) -> str:
    """A frame name or comm safe inside a folded line (see the module's docstring)."""
    value = neutralize(name)
    return value.replace(";", ":") if ";" in value else value
