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
- Frame names never contain ``;`` or a line break (C++ templates and Go closures can);
  both are replaced with ``:`` so every consumer splits the line the same way.
- Identical lines (the same stacks seen for different threads with the same comm) are
  summed, lines with no time are dropped, and lines are sorted, so the output is stable.
- Waker frames are not suffixed with ``_[w]``. ``flamegraph.pl --colors=chain`` would paint
  such frames aqua, but BCC never writes the suffix and a re-import would then see
  ``try_to_wake_up_[w]``; so, exactly like ``offwaketime -f`` output, the whole chain is
  drawn in the chain palette's blue and the ``--`` frame marks where the waker begins.
  (``--format svg``/``html`` draw the two halves in different colours.)
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, TextIO

from ..analysis.model import Stack
from ..analysis.report import Report, Wakeup
from . import RenderOptions

DELIMITER = "-"
SEPARATOR = "--"
MISSED_USER = "[Missed User Stack]"
MISSED_KERNEL = "[Missed Kernel Stack]"


#: Lines written per ``out.write``: big reports are never held twice in memory.
CHUNK_LINES = 2_000


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    totals = folded_totals(report.wakeups)
    lines = sorted(totals)
    for start in range(0, len(lines), CHUNK_LINES):
        out.write("".join(f"{line} {totals[line]}\n"
                          for line in lines[start:start + CHUNK_LINES]))


def folded_totals(wakeups: Iterable[Wakeup]) -> Dict[str, int]:
    """Folded stack line (without its value) → total microseconds."""
    totals: Dict[str, int] = {}
    cache: Dict[int, str] = {}  # id(stack) -> rendered half; stacks are interned
    for wakeup in wakeups:
        edge = wakeup.edge
        if edge.total_us <= 0:
            continue
        target = _cached(cache, edge.target_stack, True)
        if edge.preempted or wakeup.waker is None or edge.waker_stack is None:
            waker = ""
        else:
            waker = _cached(cache, edge.waker_stack, False) + clean(wakeup.waker.comm)
        line = f"{clean(wakeup.target.comm)};{target}{SEPARATOR};{waker}"
        totals[line] = totals.get(line, 0) + edge.total_us
    return totals


def _cached(cache: Dict[int, str], stack: Stack, is_target: bool) -> str:
    """A stack's half of the line, each frame followed by ``;``; memoised per stack."""
    key = id(stack) * 2 + (1 if is_target else 0)
    text = cache.get(key)
    if text is None:
        frames = target_frames(stack) if is_target else waker_frames(stack)
        text = "".join(f"{frame};" for frame in frames)
        cache[key] = text
    return text


def target_frames(stack: Stack) -> List[str]:
    """The target's frames as BCC folds them: user root..leaf, ``-``, kernel root..leaf."""
    if stack.kernel_depth is None:
        return [clean(f) for f in reversed(stack.frames)]
    user = _half(stack.user_frames, stack.missing, "user", MISSED_USER, reverse=True)
    kernel = _half(stack.kernel_frames, stack.missing, "kernel", MISSED_KERNEL, reverse=True)
    return _join(user, kernel, stack)


def waker_frames(stack: Stack) -> List[str]:
    """The waker's frames as BCC folds them: kernel leaf..root, ``-``, user leaf..root."""
    if stack.kernel_depth is None:
        return [clean(f) for f in stack.frames]
    kernel = _half(stack.kernel_frames, stack.missing, "kernel", MISSED_KERNEL, reverse=False)
    user = _half(stack.user_frames, stack.missing, "user", MISSED_USER, reverse=False)
    return _join(kernel, user, stack)


def _half(frames: Iterable[str], missing: Optional[str], half: str, marker: str,
          reverse: bool) -> List[str]:
    if missing in (half, "both"):
        return [marker]
    cleaned = [clean(f) for f in frames]
    if reverse:
        cleaned.reverse()
    return cleaned


def _join(first: List[str], second: List[str], stack: Stack) -> List[str]:
    """BCC writes the delimiter only when both halves were captured and are not empty."""
    if stack.missing is None and first and second:
        return [*first, DELIMITER, *second]
    return [*first, *second]


def clean(frame: str) -> str:
    """A frame name safe inside a folded line: no ``;`` and no line breaks."""
    if ";" in frame or "\n" in frame or "\r" in frame:
        return frame.replace("\r\n", ":").replace(";", ":").replace("\n", ":").replace("\r", ":")
    return frame
