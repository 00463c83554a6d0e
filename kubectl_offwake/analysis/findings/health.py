"""Report-wide findings: threads still blocked when tracing stopped, one waker behind most
wakeups, and data the collector lost.

Each looks at the whole report once rather than per traced process: a stuck thread and a
loss are facts about the trace, and a dominant waker is dominant over everything traced.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from ...units import fmt_us
from ...wire.schema import LOSS_COUNTERS, MAP_SIZE_OPTIONS, distinct_losses
from ..categories import CATEGORY_BY_ID
from ..frames import normalize
from ..model import Pending
from ..report import CAUSE_WAKER, INFO, WARNING, Finding, Party, Severity, Wakeup
from ..roles import MAIN, WORKER
from ..vocabulary import process_label
from .context import Context
from .evidence import PREEMPTIONS, counts
from .wording import and_more, pct

#: A thread still off the CPU at the end, and not idle in its event loop or a sleep, for
#: this long is stuck: half a second is longer than any lock or disk wait a healthy proxy
#: puts in a request's path, and short enough to show within the shortest trace.
PENDING_MIN_US = 500_000
#: A thread still runnable-but-waiting at the end for this long had no CPU: 100 ms is a
#: whole CFS period, longer than a scheduler slice, so a quota ran out or the CPU was taken.
PENDING_RUNQ_MIN_US = 100_000
#: Kernel frames of a thread idle by design (its event loop or a sleep) at the end.
IDLE_WAIT_FRAMES = frozenset((
    "do_epoll_wait", "ep_poll", "do_epoll_pwait", "do_sys_poll", "do_select", "core_sys_select",
    "do_poll", "do_nanosleep", "hrtimer_nanosleep", "common_nsleep", "common_nsleep_timens",
    "poll_schedule_timeout", "do_pselect",
))
#: Scheduler frames a blocked stack starts with; where it blocked is the first frame past them.
_SCHEDULER_FRAMES = frozenset((
    "__schedule", "schedule", "schedule_timeout", "schedule_hrtimeout_range",
    "schedule_hrtimeout_range_clock", "io_schedule", "schedule_preempt_disabled",
    "finish_task_switch",
))
#: One waker process behind at least this share of all wakeups: a majority makes it the
#: main reason the threads wake.
DOMINANT_SHARE = 0.5
#: ... and at least this many wakeups, so a majority in a short or idle trace is no news.
DOMINANT_MIN_WAKES = 50
#: Lost records as a share of wakeups from which losses are a warning: at 1% the shares the
#: findings print (in whole percents) may be off; below it the loss is a footnote (info).
LOSS_WARN_SHARE = 0.01
#: The map-size option BCC's offwaketime has (a capture imported from it).
OFFWAKETIME_OPTIONS = ("--stack-storage-size",)


@dataclass(frozen=True)
class Stuck:
    """A thread off the CPU at the end, and how it was waiting."""

    pending: Pending
    party: Party
    state: str


def still_off_cpu(ctx: Context) -> Optional[Finding]:
    """Threads off the CPU at the end and not idle by design: stuck on a lock or I/O."""
    stuck: List[Stuck] = []
    for p in ctx.recording.pending:
        party = ctx.namer.party(p.task)
        state = _stuck_state(p, party)
        if state is not None:
            stuck.append(Stuck(p, party, state))
    if not stuck:
        return None
    stuck.sort(key=lambda s: -s.pending.waiting_us)
    worst = stuck[0]
    comm = worst.pending.task.comm
    return Finding(
        id="still-off-cpu", severity=WARNING, title=f"{comm} never woke",
        text=(f"{comm} ({worst.party.name}) was still off the CPU when tracing stopped, "
              f"{worst.state} for {fmt_us(worst.pending.waiting_us)}"
              f"{and_more(len(stuck) - 1, 'more thread')}. A thread stuck on a lock never "
              "wakes, so no wakeup shows it."),
        evidence={"threads": [{"comm": s.pending.task.comm, "tid": s.pending.task.tid,
                               "waiting_us": s.pending.waiting_us, "state": s.state,
                               "stack": list(s.pending.stack.kernel_frames[:8])}
                              for s in stuck]})


def _stuck_state(p: Pending, party: Party) -> Optional[str]:
    """How a thread still off the CPU was waiting, or None when that is not worth a finding."""
    frames = [normalize(f) for f in p.stack.kernel_frames]
    if p.preempted:
        return "runnable, waiting for a CPU" if p.waiting_us >= PENDING_RUNQ_MIN_US else None
    if p.waiting_us < PENDING_MIN_US or IDLE_WAIT_FRAMES.intersection(frames):
        return None
    if party.role is not None and party.role not in (MAIN, WORKER):
        return None  # Envoy's helper threads idle on condition variables by design
    where = _blocked_in(frames)
    if any(f.startswith(("futex_wait", "__futex_wait", "futex_do_wait")) for f in frames):
        return f"blocked on a futex (a lock or condition variable, in {where})"
    return f"blocked in {where}"


def _blocked_in(frames: Sequence[str]) -> str:
    """The first informative frame of a blocked stack (past the scheduler)."""
    for name in frames:
        if name not in _SCHEDULER_FRAMES and not name.startswith("__x64_sys") and name:
            return name
    return "the kernel"


def dominant_waker(ctx: Context) -> Optional[Finding]:
    """One outside process behind most wakeups."""
    total = 0
    for proc in ctx.processes:
        for category, ws in proc.by_category.items():
            if category in PREEMPTIONS:
                continue
            n = counts(ws)
            if n is None:
                return None
            total += n
    if total <= 0:
        return None
    own = {(t.target.pid, t.target.name) for t in ctx.report.by_thread}
    mine: Dict[str, List[Wakeup]] = defaultdict(list)
    for ws in ctx.index.wakers.values():
        for w in ws:  # by name, as "who woke the threads" lists them; the targets' own not
            if (w.waker is not None and w.cause == CAUSE_WAKER
                    and (w.waker.pid, w.waker.name) not in own):
                mine[process_label(w.waker)].append(w)
    if not mine:
        return None
    counted = {name: counts(ws) or 0 for name, ws in mine.items()}
    name, count = max(counted.items(), key=lambda kv: (kv[1], kv[0]))
    ws = mine[name]
    share = count / total
    if count < DOMINANT_MIN_WAKES or share < DOMINANT_SHARE:
        return None
    cats: Dict[str, int] = defaultdict(int)
    for w in ws:
        cats[w.category] += w.edge.count or 0
    main_cat = max(cats.items(), key=lambda kv: kv[1])[0]
    return Finding(
        id="dominant-waker", severity=INFO, title=f"Most wakeups come from {name}",
        text=(f"{name} caused {pct(share)} of all wakeups ({count} of {total}), mostly "
              f"{CATEGORY_BY_ID[main_cat].title}."),
        evidence={"waker": name, "wakeups": count, "all_wakeups": total,
                  "share": round(share, 4), "categories": dict(cats),
                  "off_cpu_us": sum(w.edge.total_us for w in ws)})


def losses(ctx: Context) -> Optional[Finding]:
    """Lost stacks or map updates, and the option of the command that made the recording
    that makes room (so the advice can be followed as written)."""
    lost = distinct_losses(ctx.recording.lost)
    if not lost:
        return None
    parts = []
    flags: List[str] = []
    for key, n in sorted(lost.items()):
        what, flag = LOSS_COUNTERS.get(key, (key.replace("_", " "), ""))
        parts.append(f"{n} {what}")
        if flag and flag not in flags:
            flags.append(flag)
    wakeups = ctx.report.totals.wakeups
    total_lost = sum(lost.values())
    severity: Severity = INFO
    if wakeups and total_lost / max(wakeups, 1) >= LOSS_WARN_SHARE:
        severity = WARNING
    rerun = rerun_advice(ctx.recording.source, flags)
    return Finding(
        id="losses", severity=severity, title="Data was lost",
        text=(f"The collector lost data ({'; '.join(parts)}), so some wakeups are missing "
              f"or show an empty stack.{' ' + rerun if rerun else ''}"),
        evidence={"lost": lost, "flags": flags, "wakeups": wakeups, "rerun": rerun or None})


def rerun_advice(source: Mapping[str, object], flags: List[str]) -> str:
    """One sentence: the command that made the recording again, with larger maps.

    The recording says which command made it and which options that command has (its
    ``client`` record), and the sizes it used (``hello.map_sizes``): the advice names only
    options that command has, at twice the size used. A recording without a ``client``
    record came from the collector run by hand, whose options are all there; a BCC capture
    can only be taken again with a larger stack map.
    """
    kind = str(source.get("kind") or "")
    if kind.startswith("offwaketime"):
        usable = [f for f in flags if f in OFFWAKETIME_OPTIONS]
        return f"Capture again with a larger offwaketime {' and '.join(usable)}." \
            if usable else ""
    command = source.get("command")
    options = source.get("command_options") if command else list(MAP_SIZE_OPTIONS)
    usable = [f for f in flags if isinstance(options, list) and f in options]
    if not usable:
        return ""
    start = f"Trace again with {command}" if command else "Run the collector again with"
    sizes = source.get("map_sizes")
    used = [_size(sizes, f) for f in usable]
    if all(used):
        args = " ".join(f"{f} {2 * (n or 0)}" for f, n in zip(usable, used))
        return f"{start} {args} (twice the size this run used)."
    return f"{start} a larger {' and '.join(usable)}."


def _size(sizes: object, flag: str) -> Optional[int]:
    """The size ``hello.map_sizes`` says a map had, when it says so sensibly."""
    value = sizes.get(flag) if isinstance(sizes, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None
