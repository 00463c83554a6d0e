"""``--format table`` (the default): the report for a terminal, read top to bottom.

An on-call engineer should get the answer from the first screen: what was traced, where
the off-CPU time went (by category), who woke Envoy (by pod and container), how each
Envoy thread spent its time, and what that means (findings). Details follow: the heaviest
wake paths, threads still waiting at the end, CPU throttling, and what the tracer lost.

Written with rich to the given stream. Without ``options.color`` no escape codes are
written at all, so saved output (and the golden files) are plain text; the layout fits
``options.width`` columns (100-120 is the design width). Every string goes in through
``_text`` (:func:`~kubectl_offwake.untrusted.rich_text`, as in the live display) or
:func:`_row`, which neutralize it (names from a node can carry escape sequences) and never
interpret rich markup; the words are the vocabulary's.
"""

from __future__ import annotations

import io
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple, Union

from rich import box
from rich.console import Console, RenderableType
from rich.console import Group as RichGroup
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..analysis.categories import CATEGORY_BY_ID, ROLES
from ..analysis.model import Pending, Stack, Throttling
from ..analysis.report import (
    CRITICAL,
    INFO,
    WARNING,
    Group,
    Report,
    Severity,
    ThreadSummary,
    Wakeup,
)
from ..analysis.runqueue import Holder
from ..analysis.vocabulary import (
    ENVOY_COUNTED,
    HELD_CPU,
    cause_phrase,
    envoy_facts,
    is_marker,
    listening_sockets,
    source_facts,
    target_names,
    thread_name,
    total_facts,
    trace_value,
    waker_group,
    woken_by,
)
from ..units import bar, fmt_count, fmt_share, fmt_us
from ..untrusted import rich_text as _text
from . import RenderOptions, incomplete

#: How many rows the long sections show before summarising the rest.
TOP_WAKERS = 10
TOP_PATHS = 10
TOP_HOLDERS = 6
#: Scheduler frames that say nothing about *why* a thread slept.
_SCHED_FRAMES = frozenset({
    "__schedule", "schedule", "preempt_schedule", "preempt_schedule_common",
    "preempt_schedule_irq", "__cond_resched", "_cond_resched", "schedule_timeout",
    "schedule_hrtimeout_range_clock", "schedule_hrtimeout_range", "schedule_hrtimeout",
    "io_schedule", "finish_task_switch", "finish_task_switch.isra.0",
})
_SEVERITY_STYLE: Dict[Severity, str] = {CRITICAL: "bold red", WARNING: "bold yellow",
                                        INFO: "cyan"}
_SEVERITY_MARK: Dict[Severity, str] = {CRITICAL: "!!", WARNING: "! ", INFO: "i "}


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=options.width, color_system="standard" if options.color else None,
        force_terminal=bool(options.color), no_color=not options.color, markup=False,
        highlight=False, emoji=False, soft_wrap=False, legacy_windows=False,
    )
    for section in (_header, _categories, _wakers, _threads, _findings, _envoy, _holders,
                    _paths, _pending, _throttling, _losses):
        section(report, console, options)
    # rich pads table lines to the full width; trailing blanks only bloat saved reports.
    out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


# ----------------------------------------------------------------------------- sections

def _header(report: Report, console: Console, options: RenderOptions) -> None:
    title = _text(options.title, "bold")
    targets = target_names(report)
    if targets:
        title.append(_text(" · " + ", ".join(targets)))
    console.print(title, overflow="fold")
    facts = source_facts(report.source)
    if facts:
        console.print(_text(" · ".join(facts), "dim"), overflow="fold")
    for line in incomplete.lines(report):
        console.print(_text(line, "bold red"), overflow="fold")
    console.print(_text(" · ".join(map(str, total_facts(report.totals)))), overflow="fold")


def _categories(report: Report, console: Console, options: RenderOptions) -> None:
    if not report.by_category:
        console.print()
        console.print("No off-CPU time was recorded for the target threads.")
        return
    causes = _heaviest(report.wakeups, lambda w: w.category, lambda w: w.cause)
    table = _table("Where the off-CPU time went")
    table.add_column("Category", no_wrap=True)
    table.add_column("Cause", overflow="fold", ratio=1, min_width=9)
    table.add_column("Wakeups", justify="right", no_wrap=True)
    table.add_column("Off-CPU", justify="right", no_wrap=True)
    table.add_column("Run queue", justify="right", no_wrap=True)
    width = _bar_width(options)
    if width:  # below 100 columns, the longest single wait is the first thing to go
        table.add_column("Max", justify="right", no_wrap=True)
    table.add_column("Share", justify="right", no_wrap=True)
    if width:
        table.add_column("", no_wrap=True)
    for group in report.by_category:
        category = CATEGORY_BY_ID.get(group.key)
        row: List[str] = [
            category.id if category else group.key,
            (", ".join if options.width >= 110 else _first_of)(causes.get(group.key, ())),
            fmt_count(group.count), fmt_us(group.total_us), fmt_us(group.runq_us),
        ]
        if width:
            row.append(fmt_us(group.max_us))
        row.append(fmt_share(group.share))
        if width:
            row.append(bar(group.share, width))
        _row(table, *row)
    console.print()
    console.print(table)


def _heaviest(wakeups: Iterable[Wakeup], group: Callable[[Wakeup], str],
              item: Callable[[Wakeup], str]) -> Dict[str, Tuple[str, ...]]:
    """Per group of wakeups, its items by off-CPU time, heaviest first (ties by name, for
    stable output): each category's causes, each waker's categories."""
    sums: Dict[str, Dict[str, int]] = {}
    for wakeup in wakeups:
        per = sums.setdefault(group(wakeup), {})
        key = item(wakeup)
        per[key] = per.get(key, 0) + wakeup.edge.total_us
    return {
        key: tuple(c for c, _ in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))
        for key, per in sums.items()
    }


def _wakers(report: Report, console: Console, options: RenderOptions) -> None:
    if not report.by_waker:
        return
    categories = _heaviest(report.wakeups, lambda w: waker_group(w)[0],
                           lambda w: w.category)
    wide = options.width >= 110
    table = _table("Who woke the threads")
    table.add_column("Waker", no_wrap=True, overflow="fold")
    table.add_column("Wakeups", justify="right", no_wrap=True)
    table.add_column("Off-CPU", justify="right", no_wrap=True)
    table.add_column("Share", justify="right", no_wrap=True)
    if wide:
        table.add_column("", no_wrap=True)
    table.add_column("Mostly", ratio=1)
    for group in report.by_waker[:TOP_WAKERS]:
        mostly = categories.get(group.key, ())
        row = [group.label, fmt_count(group.count), fmt_us(group.total_us),
               fmt_share(group.share)]
        if wide:
            row.append(bar(group.share, 12))
        row.append(", ".join(mostly[:2]) if wide else _first_of(mostly))
        _row(table, *row)
    rest = report.by_waker[TOP_WAKERS:]
    if rest:
        row = [f"… {len(rest)} more", fmt_count(_sum_counts(rest)),
               fmt_us(sum(g.total_us for g in rest)), fmt_share(sum(g.share for g in rest))]
        _row(table, *row, *([""] * (2 if wide else 1)))
    console.print()
    console.print(table)


def _first_of(items: Sequence[str]) -> str:
    """The first item, and how many more there are (``timer +1``)."""
    if not items:
        return ""
    return items[0] + (f" +{len(items) - 1}" if len(items) > 1 else "")


def _threads(report: Report, console: Console, options: RenderOptions) -> None:
    if not report.by_thread:
        return
    table = _table("Target threads")
    table.add_column("Thread", ratio=1)
    table.add_column("Role", no_wrap=True)
    table.add_column("Off-CPU", justify="right", no_wrap=True)
    table.add_column("Run queue", justify="right", no_wrap=True)
    table.add_column("On-CPU", justify="right", no_wrap=True)
    table.add_column("Max run", justify="right", no_wrap=True)
    for thread in _ordered_threads(report.by_thread):
        oncpu = thread.oncpu
        mostly = ", ".join(
            f"{g.key} {_percent(g.total_us, thread.total_us)}" for g in thread.by_category[:3]
        )
        cell: RenderableType = _text(thread_name(thread.target), "bold")
        if mostly:
            cell = RichGroup(cell, Padding(_text(mostly, "dim"), (0, 0, 0, 2)))
        _row(
            table, cell, thread.target.role or "-", fmt_us(thread.total_us), fmt_us(thread.runq_us),
            fmt_us(oncpu.total_us) if oncpu else "-", fmt_us(oncpu.max_us) if oncpu else "-",
        )
    console.print()
    console.print(table)


def _ordered_threads(threads: Sequence[ThreadSummary]) -> List[ThreadSummary]:
    """Main first, then workers, watchdog, ... (ROLES order), then by name and tid."""
    rank = {role: i for i, role in enumerate(ROLES)}
    return sorted(threads, key=lambda t: (rank.get(t.target.role or "other", len(rank)),
                                          t.target.comm, t.target.tid or 0))


def _percent(part: int, whole: int) -> str:
    """A whole-number percentage, for compact lists of shares."""
    if not whole:
        return "-"
    share = part * 100 / whole
    return "<1%" if 0 < share < 0.5 else f"{share:.0f}%"


def _findings(report: Report, console: Console, options: RenderOptions) -> None:
    console.print()
    console.print(_text("Findings", "bold"))
    if not report.findings:
        why = incomplete.why_no_findings(report)
        console.print(_indented(why, 2, options.width) if why else "  Nothing stands out.")
        return
    for finding in report.findings:
        line = Text("  ")
        line.append(_SEVERITY_MARK[finding.severity], style=_SEVERITY_STYLE[finding.severity])
        line.append_text(_text(f" {finding.title}", "bold"))
        console.print(line)
        console.print(_indented(finding.text, 6, options.width))


def _indented(text: str, indent: int, width: int) -> Text:
    """Word-wrapped text with a hanging indent (rich wraps, we indent every line)."""
    lines = _text(text).wrap(Console(width=max(20, width - indent), color_system=None,
                                    markup=False, highlight=False, emoji=False),
                            max(20, width - indent))
    out = Text()
    for i, line in enumerate(lines):
        if i:
            out.append("\n")
        out.append(" " * indent)
        out.append_text(line)
    return out


def _envoy(report: Report, console: Console, options: RenderOptions) -> None:
    """Envoy's own counts over the trace, each beside the wakeups that go with it."""
    for side in report.envoy:
        console.print()
        console.print(_text(ENVOY_COUNTED, "bold"))
        console.print(_indented(envoy_facts(side.counts), 2, options.width))
        console.print(_indented(listening_sockets(side.counts), 2, options.width))
        if not side.rows:
            continue
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      header_style="bold", expand=False)
        table.add_column("Envoy counted", no_wrap=True)
        table.add_column("", justify="right", no_wrap=True)
        table.add_column("Counters", overflow="fold", ratio=1)
        table.add_column("The trace saw", no_wrap=True)
        table.add_column("", justify="right", no_wrap=True)
        for row in side.rows:
            _row(table, row.what, fmt_count(row.envoy), row.counters, row.trace,
                 trace_value(row))
        console.print(Padding(table, (0, 0, 0, 2)))


def _holders(report: Report, console: Console, options: RenderOptions) -> None:
    """Who had the CPU while the threads waited to run, per traced process."""
    by_process: Dict[str, List[Holder]] = {}
    for holder in report.holders:
        by_process.setdefault(holder.process, []).append(holder)
    for process, holders in by_process.items():
        title = HELD_CPU + (f" ({process})" if len(by_process) > 1 else "")
        table = _table(title)
        table.add_column("Held by", ratio=1, overflow="fold")
        table.add_column("Waits", justify="right", no_wrap=True)
        table.add_column("Waited", justify="right", no_wrap=True)
        table.add_column("Longest", justify="right", no_wrap=True)
        table.add_column("Share", justify="right", no_wrap=True)
        for h in holders[:TOP_HOLDERS]:
            _row(table, h.label, fmt_count(h.count), fmt_us(h.wait_us), fmt_us(h.max_us),
                 fmt_share(h.share))
        rest = holders[TOP_HOLDERS:]
        if rest:
            _row(table, f"… {len(rest)} more", fmt_count(sum(h.count for h in rest)),
                 fmt_us(sum(h.wait_us for h in rest)), "", fmt_share(sum(h.share for h in rest)))
        console.print()
        console.print(table)


def _paths(report: Report, console: Console, options: RenderOptions) -> None:
    if not report.wakeups:
        return
    table = _table("Heaviest wake paths")
    table.add_column("Off-CPU", justify="right", no_wrap=True)
    table.add_column("Wakeups", justify="right", no_wrap=True)
    table.add_column("Max", justify="right", no_wrap=True)
    table.add_column("Thread ← woken by; category, cause", ratio=1)
    for wakeup in report.wakeups[:TOP_PATHS]:
        _row(table, fmt_us(wakeup.edge.total_us), fmt_count(wakeup.edge.count),
             fmt_us(wakeup.edge.max_us), _path_text(wakeup))
    rest = len(report.wakeups) - TOP_PATHS
    console.print()
    console.print(table)
    if rest > 0:
        console.print(_text(f"  … and {rest} more; --format json or html lists every path.",
                            "dim"))


def _path_text(wakeup: Wakeup) -> Text:
    """``THREAD ← WHO`` over ``category (detail), cause``; an interrupt's bystander is in
    the cause, never in the waker's place."""
    text = _text(thread_name(wakeup.target), "bold")
    text.append_text(_text(f" ← {woken_by(wakeup)}"))
    text.append("\n")
    text.append_text(_text(wakeup.category + (f" ({wakeup.detail})" if wakeup.detail else "")))
    text.append_text(_text(f", {cause_phrase(wakeup)}", "dim"))
    return text


def _pending(report: Report, console: Console, options: RenderOptions) -> None:
    if not report.pending:
        return
    names = {(t.target.pid, t.target.tid): t.target for t in report.by_thread}
    table = _table("Still off the CPU when tracing stopped (not in the totals above)")
    table.add_column("Thread", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Waiting so far", justify="right", no_wrap=True)
    table.add_column("Where", overflow="fold", ratio=1)
    for item in sorted(report.pending, key=lambda p: (-p.waiting_us, p.task.comm,
                                                       p.task.tid or 0)):
        party = names.get((item.task.pid, item.task.tid))
        _row(table, thread_name(party or item.task), "runnable" if item.preempted else "blocked",
             fmt_us(item.waiting_us), _where(item))
    console.print()
    console.print(table)


def _where(item: Pending) -> str:
    """Where a waiting thread sleeps: its first telling kernel frame and user frame."""
    return _stack_summary(item.stack)


def _stack_summary(stack: Stack) -> str:
    kernel = [f for f in stack.kernel_frames if f not in _SCHED_FRAMES]
    user = list(stack.user_frames)
    parts = []
    if kernel:
        parts.append(kernel[0])
    if user:
        parts.append(_short(user[0]))
        telling = next((f for f in user[1:] if "Envoy::" in f), None)
        if telling:
            parts.append(_short(telling))
        if len(user) > 1 and is_marker(user[-1]):
            parts.append(user[-1])  # where the walk stopped: the callers are unknown
    return " ← ".join(parts) if parts else "(no stack)"


def _short(frame: str) -> str:
    """A C++ frame without its argument list: ``Envoy::X::run(...)``."""
    cut = frame.find("(")
    if cut > 0 and not frame.startswith("("):
        return frame[:cut] + "()"
    return frame


def _throttling(report: Report, console: Console, options: RenderOptions) -> None:
    lines = [line for line in map(_throttle_line, report.throttling) if line]
    if not lines:
        return
    console.print()
    console.print(_text("CPU throttling (cpu.stat of the target's cgroup)", "bold"))
    for line in lines:
        console.print(_indented(line, 2, options.width))


def _throttle_line(throttling: Throttling) -> Optional[str]:
    periods = throttling.delta("nr_periods")
    throttled = throttling.delta("nr_throttled")
    usec = throttling.delta("throttled_usec")
    if periods is None and throttled is None and usec is None:
        return None
    who = f"pid {throttling.pid}" if throttling.pid is not None else "target"
    if throttled is None:
        text = f"{who}: no nr_throttled counter"
    elif throttled == 0:
        text = f"{who}: not throttled"
    else:
        text = f"{who}: throttled in {fmt_count(throttled)}"
        if periods:
            text += f" of {fmt_count(periods)} periods ({fmt_share(throttled / periods)})"
        else:
            text += " periods"
    if usec:
        text += f", {fmt_us(usec)} throttled in total"
    return text


def _losses(report: Report, console: Console, options: RenderOptions) -> None:
    lost = [(k, v) for k, v in sorted(report.totals.lost.items()) if v]
    if not lost and not report.warnings:
        return
    console.print()
    console.print(_text("Warnings", "bold yellow"))
    if lost:
        console.print(_indented(
            "lost: " + ", ".join(f"{name} {fmt_count(count)}" for name, count in lost), 2,
            options.width))
    for warning in report.warnings:
        console.print(_indented(f"- {warning}", 2, options.width))


# ------------------------------------------------------------------------------ helpers

def _bar_width(options: RenderOptions) -> int:
    """Share bars get what the width can spare: none below 100 columns, 16 from 110."""
    if options.width >= 110:
        return 16
    return 10 if options.width >= 100 else 0


def _row(table: Table, *cells: Union[str, RenderableType]) -> None:
    """A table row whose plain-string cells go in as :func:`_text`."""
    table.add_row(*(_text(cell) if isinstance(cell, str) else cell for cell in cells))


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, pad_edge=False, header_style="bold", expand=False)


def _sum_counts(groups: Sequence[Group]) -> Optional[int]:
    counts = [g.count for g in groups if g.count is not None]
    return sum(counts) if counts else None
