"""Findings (DESIGN.md §3.5): plain sentences backed by the numbers in ``evidence``.

Each detector looks for the trace signature of one problem that real meshes have and
says nothing unless its evidence is present: rates need counts and the trace's duration
(BCC imports have no counts), throttling needs the cgroup counters, preemptors need the
collector's ``preempted_by``. Thresholds are the named constants below; each is a
judgement call documented next to it.

Detectors work per traced process (one Envoy per pod), so a report over several pods
says which pod each finding is about.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, cast

from ..units import fmt_us
from ..wire.schema import LOSS_COUNTERS, distinct_losses
from .aggregate import Index, index
from .categories import CATEGORIES, CATEGORY_BY_ID
from .classify import CAUSE_WAKER
from .frames import normalize
from .model import Pending, Recording, Throttling
from .naming import Namer
from .report import Finding, Party, Report, ThreadSummary, Wakeup
from .roles import ACCESS_LOG_FLUSH, MAIN, WORKER
from .vocabulary import traced_seconds, with_comm


def _cat(category_id: str) -> str:
    """A category id, checked against the table when this module loads."""
    if category_id not in CATEGORY_BY_ID:
        raise ValueError(f"unknown category {category_id!r}")
    return category_id


UDP = _cat("udp-receive")
UNIX = _cat("unix-socket")
EVENTFD = _cat("eventfd")
FUTEX = _cat("futex-wake")
ACCEPT = _cat("tcp-accept")

INFO, WARNING, CRITICAL = "info", "warning", "critical"

# -- thresholds ---------------------------------------------------------------------------
#: Runnable-but-waiting share of the threads' off-CPU time that is worth a finding.
RUNQ_SHARE_MIN = 0.05
#: ... and at least this much time in absolute terms, so an idle trace says nothing.
RUNQ_MIN_US = 10_000
#: Preemption by other processes must explain at least this share of the runnable wait
#: before it is called a noisy neighbour.
NEIGHBOUR_MIN_SHARE = 0.05
#: Above this share the CPU shortage is critical.
RUNQ_SHARE_CRITICAL = 0.20
#: DNS answers waking the main thread this often per second is a refresh storm.
DNS_WAKES_PER_S = 5.0
#: xDS churn: unix-socket wakes of the main thread per second ...
XDS_UNIX_WAKES_PER_S = 1.0
#: ... followed by at least this many eventfd wakes of workers by the main thread.
XDS_FANOUT_MIN_WAKES = 10
#: Cross-thread posts: this share of a worker's wakeups coming from other Envoy threads ...
POST_SHARE_MIN = 0.5
#: ... and at least this many of them.
POST_MIN_WAKES = 20
#: One waker process behind at least this share of all wakeups ...
DOMINANT_SHARE = 0.5
#: ... and at least this many wakeups.
DOMINANT_MIN_WAKES = 50
#: Accept herd: at least this many workers woken by new connections ...
HERD_MIN_WORKERS = 2
#: ... each at least this often ...
HERD_MIN_WAKES_PER_WORKER = 10
#: ... and evenly (fewest / most), as when every connection wakes every waiting worker.
HERD_BALANCE = 0.8
#: Hot worker: its on-CPU time at least this many times the median of the other workers ...
HOT_RATIO = 3.0
#: ... and busy at least this share of the trace (or HOT_MIN_ONCPU_US without a duration).
HOT_MIN_BUSY = 0.25
HOT_MIN_ONCPU_US = 200_000
#: Event-loop stall: one on-CPU run this long delays every event queued on that thread.
STALL_US = 50_000
#: Envoy's watchdog counts a miss at 200 ms by default.
STALL_CRITICAL_US = 200_000
#: A thread still off the CPU at the end, not idle in epoll/poll/sleep, this long is stuck.
PENDING_MIN_US = 500_000
#: A thread still runnable-but-waiting at the end this long had no CPU.
PENDING_RUNQ_MIN_US = 100_000
#: Access-log flush traffic: futex wakes of AccessLogFlush per second ...
ACCESS_LOG_WAKES_PER_S = 10.0
#: ... or workers blocked this long on the access-log lock.
ACCESS_LOG_WORKER_WAIT_US = 10_000
#: Workers blocked this long on a futex the main thread released (stats merge, TLS update).
MAIN_LOCK_WAIT_US = 10_000

#: Lost records, as a share of wakeups, above which losses are a warning.
LOSS_WARN_SHARE = 0.01

#: Target-stack frames of a thread idle by design (its event loop or a sleep).
IDLE_WAIT_FRAMES = frozenset((
    "do_epoll_wait", "ep_poll", "do_epoll_pwait", "do_sys_poll", "do_select", "core_sys_select",
    "do_poll", "do_nanosleep", "hrtimer_nanosleep", "common_nsleep", "common_nsleep_timens",
    "poll_schedule_timeout", "do_pselect",
))

#: Wake details that mean another Envoy thread posted work.
POST_DETAILS = frozenset(("cross-thread-post", "thread-local-update", "stats-flush"))


def find(recording: Recording, report: Report, namer: Namer,
         idx: Optional[Index] = None) -> List[Finding]:
    """Every finding the recording supports, most severe first."""
    ctx = _Context(recording, report, namer, idx if idx is not None else index(report.wakeups))
    found: List[Finding] = []
    for detector in DETECTORS:
        found.extend(detector(ctx))
    order = {CRITICAL: 0, WARNING: 1, INFO: 2}
    found.sort(key=lambda f: order.get(f.severity, 3))
    return found


# -- shared helpers -----------------------------------------------------------------------

@dataclass
class _Process:
    """The wakeups of one traced process, indexed the ways the detectors read them."""

    key: str
    name: str
    pid: Optional[int] = None
    wakeups: List[Wakeup] = field(default_factory=list)
    threads: List[ThreadSummary] = field(default_factory=list)
    by_category: Dict[str, List[Wakeup]] = field(default_factory=dict)
    workers: List[Wakeup] = field(default_factory=list)  # targets with the worker role

    def of(self, category: str) -> List[Wakeup]:
        return self.by_category.get(category, [])


class _Context:
    def __init__(self, recording: Recording, report: Report, namer: Namer,
                 idx: Index) -> None:
        self.recording = recording
        self.report = report
        self.namer = namer
        self.index = idx
        self.duration_s = traced_seconds(recording.source)
        procs: Dict[str, _Process] = {}
        for (tk, category), ws in idx.cells.items():
            target = idx.threads[tk]
            key = _process_key(target)
            proc = procs.get(key)
            if proc is None:
                proc = procs[key] = _Process(key, _process_name(target), target.pid)
            proc.wakeups.extend(ws)
            proc.by_category.setdefault(category, []).extend(ws)
            if target.role == WORKER:
                proc.workers.extend(ws)
        for t in report.by_thread:
            key = _process_key(t.target)
            proc = procs.get(key)
            if proc is None:
                proc = procs[key] = _Process(key, _process_name(t.target), t.target.pid)
            proc.threads.append(t)
        self.processes = list(procs.values())
        self.several = len({p.name for p in self.processes}) > 1

    def where(self, proc: _Process) -> str:
        """' in NAME' when the report covers several processes, else ''."""
        return f" in {proc.name}" if self.several else ""


def _waker_label(ctx: _Context, w: Wakeup) -> str:
    """The waker's name; its process comm too when it shares a container with the target
    (pilot-agent and Envoy both live in istio-proxy)."""
    assert w.waker is not None
    if w.waker.name == w.target.name and w.waker.pid != w.target.pid:
        info = ctx.recording.processes.get(w.waker.pid) if w.waker.pid is not None else None
        comm = info.comm if info is not None and info.comm else w.waker.comm
        return with_comm(w.waker.name, comm)
    return w.waker.name


def _process_key(party: Party) -> str:
    """The traced process a thread belongs to. Without tgids (BCC imports) every Envoy
    thread (one with a role) is taken to belong to one Envoy."""
    if party.pid is not None:
        return f"{party.pid}:{party.name}"
    return ":envoy" if party.role is not None else f":{party.name}"


def _process_name(party: Party) -> str:
    return "envoy" if party.pid is None and party.role is not None else party.name


def pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def plural(n: int, word: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _counts(wakeups: Iterable[Wakeup]) -> Optional[int]:
    """The summed wakeup count, or None when any is unknown."""
    counts = [w.edge.count for w in wakeups]
    if None in counts:
        return None
    return sum(cast(List[int], counts))


_PREEMPTIONS = frozenset(c.id for c in CATEGORIES if c.preemption)


def _runnable_wait(ctx: _Context, proc: _Process, workers_only: bool) -> Tuple[int, int]:
    """Off-CPU time of the process's (worker) threads, and how much of it they spent
    runnable, waiting for a CPU: all of a preemption, the run-queue part of a wake."""
    off = runq = 0
    for key, s in ctx.index.cell_sums.items():
        target = ctx.index.threads[key[0]]
        if _process_key(target) != proc.key or (workers_only and target.role != WORKER):
            continue
        off += s.total_us
        if key[1] in _PREEMPTIONS:
            runq += s.total_us
        elif s.runq_us is not None:
            runq += s.runq_us
        else:  # an unknown split: count what is known edge by edge
            runq += sum(w.edge.runq_us or 0 for w in ctx.index.cells[key])
    return off, runq


def _is_preemption(w: Wakeup) -> bool:
    return w.category in _PREEMPTIONS


def _throttling_of(recording: Recording, pid: Optional[int]) -> List[Throttling]:
    """The throttling counters of one traced process's cgroup (all, when none names it)."""
    own = [t for t in recording.throttling if t.pid is not None and t.pid == pid]
    return own or [t for t in recording.throttling if t.pid is None
                   or len(recording.throttling) == 1]


def _throttle_delta(counters: Sequence[Throttling], counter: str) -> Optional[int]:
    values = [t.delta(counter) for t in counters]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


# -- detectors ----------------------------------------------------------------------------

def cpu_shortage(ctx: _Context) -> List[Finding]:
    """CFS throttling (counters rose) or a noisy neighbour (preempted by others, no throttling)."""
    out: List[Finding] = []
    for proc in ctx.processes:
        counters = _throttling_of(ctx.recording, proc.pid)
        nr_throttled = _throttle_delta(counters, "nr_throttled")
        throttled_us = _throttle_delta(counters, "throttled_usec")
        nr_periods = _throttle_delta(counters, "nr_periods")
        workers_only = bool(proc.workers)
        who = "worker threads" if workers_only else "traced threads"
        off, runq = _runnable_wait(ctx, proc, workers_only)
        if off <= 0 or runq < RUNQ_MIN_US or runq / off < RUNQ_SHARE_MIN:
            continue
        share = runq / off
        severity = CRITICAL if share >= RUNQ_SHARE_CRITICAL else WARNING
        evidence: Dict[str, object] = {
            "threads": who, "off_cpu_us": off, "runnable_wait_us": runq,
            "runnable_share": round(share, 4), "nr_throttled": nr_throttled,
            "throttled_usec": throttled_us, "nr_periods": nr_periods,
        }
        if nr_throttled:
            periods = f" of {nr_periods}" if nr_periods else ""
            spent = f", {fmt_us(throttled_us)} in all" if throttled_us else ""
            out.append(Finding(
                id="cpu-throttling", severity=severity,
                title="CPU limit: CFS throttling",
                text=(f"The {who}{ctx.where(proc)} spent {pct(share)} of their off-CPU time "
                      f"({fmt_us(runq)}) runnable but waiting for a CPU, and the container "
                      f"was throttled in {nr_throttled}{periods} CFS periods{spent}. "
                      "Raise or remove the container's CPU limit."),
                evidence=evidence))
            continue
        preemptors: Dict[str, int] = defaultdict(int)
        own_us = 0
        for category in _PREEMPTIONS:
            for w in proc.of(category):
                if (workers_only and w.target.role != WORKER) or w.preempted_by is None:
                    continue
                if w.preempted_by.name == proc.name:
                    own_us += w.edge.total_us
                else:
                    preemptors[w.preempted_by.name] += w.edge.total_us
        others_us = sum(preemptors.values())
        if not preemptors or others_us < max(RUNQ_MIN_US, NEIGHBOUR_MIN_SHARE * runq):
            continue
        top, top_us = max(preemptors.items(), key=lambda kv: (kv[1], kv[0]))
        evidence.update({"preemptor": top, "preemptor_us": top_us,
                         "preempted_by_others_us": others_us, "preempted_by_own_us": own_us,
                         "preemptors": dict(sorted(preemptors.items(), key=lambda kv: -kv[1]))})
        no_throttling = ("no CFS throttling" if nr_throttled == 0
                         else "no throttling counters were recorded")
        of_all = (f" of the {fmt_us(others_us)} other processes took"
                  if len(preemptors) > 1 else "")
        out.append(Finding(
            id="noisy-neighbour", severity=severity,
            title=f"Noisy neighbour: {top}",
            text=(f"The {who}{ctx.where(proc)} spent {pct(share)} of their off-CPU time "
                  f"({fmt_us(runq)}) runnable but waiting for a CPU ({no_throttling}). "
                  f"Other processes preempted them: {top} took the CPU from them for "
                  f"{fmt_us(top_us)}{of_all}. Give the pod a CPU request that reflects its "
                  "load, or move the neighbour."),
            evidence=evidence))
    return out


def dns_storm(ctx: _Context) -> List[Finding]:
    """The main thread woken by UDP answers many times a second."""
    if ctx.duration_s is None:
        return []
    out: List[Finding] = []
    for proc in ctx.processes:
        udp = [w for w in proc.of(UDP) if w.target.role == MAIN]
        count = _counts(udp)
        if not udp or count is None:
            continue
        rate = count / ctx.duration_s
        if rate < DNS_WAKES_PER_S:
            continue
        top = _top_waker(ctx, udp)
        evidence: Dict[str, object] = {"wakeups": count, "per_second": round(rate, 2),
                                       "duration_s": ctx.duration_s, "waker": top}
        source = f", mostly from {top}" if top else ""
        out.append(Finding(
            id="dns-storm", severity=WARNING, title="DNS refresh storm",
            text=(f"DNS answers woke Envoy's main thread{ctx.where(proc)} {rate:.1f} times a "
                  f"second ({count} UDP wakeups in {ctx.duration_s:.0f} s{source}). Fewer "
                  "STRICT_DNS/LOGICAL_DNS clusters or a longer dns_refresh_rate would calm "
                  "it."),
            evidence=evidence))
    return out


def xds_churn(ctx: _Context) -> List[Finding]:
    """Unix-socket wakes of main (pilot-agent's xDS proxy), then eventfd fan-out to workers."""
    if ctx.duration_s is None:
        return []
    out: List[Finding] = []
    for proc in ctx.processes:
        unix = [w for w in proc.of(UNIX) if w.target.role == MAIN
                and w.waker is not None and w.waker.role is None]
        fanout = [w for w in proc.of(EVENTFD) if w.target.role == WORKER
                  and w.waker is not None and w.waker.role == MAIN]
        unix_count, fan_count = _counts(unix), _counts(fanout)
        if not unix or not fanout or unix_count is None or fan_count is None:
            continue
        rate = unix_count / ctx.duration_s
        workers = {w.target.tid or w.target.comm for w in fanout}
        all_workers = {t.target.tid or t.target.comm for t in proc.threads
                       if t.target.role == WORKER}
        if rate < XDS_UNIX_WAKES_PER_S or fan_count < XDS_FANOUT_MIN_WAKES \
                or len(workers) < min(2, len(all_workers)):
            continue
        top = _top_waker(ctx, unix)
        out.append(Finding(
            id="xds-churn", severity=WARNING, title="xDS push churn",
            text=(f"{top or 'A local process'} woke Envoy's main thread{ctx.where(proc)} over "
                  f"a unix socket {rate:.1f} times a second ({unix_count} wakeups), and the "
                  f"main thread then woke {len(workers)} of {len(all_workers)} workers "
                  f"through eventfd {fan_count} times to apply the updates. Look for frequent "
                  "pushes from istiod and scope configuration with Sidecar resources."),
            evidence={"unix_wakeups": unix_count, "unix_per_second": round(rate, 2),
                      "waker": top, "eventfd_wakeups": fan_count,
                      "workers_reached": len(workers), "workers": len(all_workers),
                      "duration_s": ctx.duration_s}))
    return out


def cross_thread_posts(ctx: _Context) -> List[Finding]:
    """Eventfd pokes from other Envoy threads dominating a worker's wakeups."""
    out: List[Finding] = []
    for proc in ctx.processes:
        by_worker: Dict[object, List[Wakeup]] = defaultdict(list)
        if not any(_is_post(w) for w in proc.of(EVENTFD)):
            continue
        for w in proc.workers:
            if not _is_preemption(w):
                by_worker[w.target.tid or w.target.comm].append(w)
        hits = []
        for ws in by_worker.values():
            posts = [w for w in ws if _is_post(w)]
            if not posts:
                continue
            n_all, n_posts = _counts(ws), _counts(posts)
            basis = "wakeups"
            if n_all is None or n_posts is None:
                n_all = sum(w.edge.total_us for w in ws)
                n_posts = sum(w.edge.total_us for w in posts)
                basis = "off-CPU time"
                if n_posts < RUNQ_MIN_US:
                    continue
            elif n_posts < POST_MIN_WAKES:
                continue
            if n_all <= 0 or n_posts / n_all < POST_SHARE_MIN:
                continue
            hits.append((n_posts / n_all, n_posts, n_all, basis, ws[0].target, posts))
        if not hits:
            continue
        hits.sort(key=lambda h: (-h[0], h[4].comm))
        share, n_posts, n_all, basis, worst, posts = hits[0]
        from_threads = sorted({w.waker.comm for w in posts if w.waker is not None})
        amount = (f"{n_posts} of {n_all}" if basis == "wakeups"
                  else f"{fmt_us(n_posts)} of {fmt_us(n_all)} off-CPU")
        others = f" (and {plural(len(hits) - 1, 'more worker')})" if len(hits) > 1 else ""
        out.append(Finding(
            id="cross-thread-posts", severity=INFO, title="Cross-thread posts dominate",
            text=(f"{pct(share)} of {worst.comm}'s wakeups{ctx.where(proc)} ({amount}) were "
                  f"eventfd pokes from other Envoy threads ({', '.join(from_threads)}), not "
                  f"traffic{others}: configuration, stats or thread-local updates keep the "
                  "workers busy."),
            evidence={"worker": worst.comm, "tid": worst.tid, "share": round(share, 4),
                      "posts": n_posts, "all": n_all, "basis": basis,
                      "from": from_threads,
                      "workers": [{"comm": h[4].comm, "tid": h[4].tid,
                                   "share": round(h[0], 4)} for h in hits]}))
    return out


def _is_post(w: Wakeup) -> bool:
    if w.category != EVENTFD or w.waker is None:
        return False
    if w.detail in POST_DETAILS:
        return True
    same_process = w.waker.pid is not None and w.waker.pid == w.target.pid
    return same_process or w.waker.role is not None


def dominant_waker(ctx: _Context) -> List[Finding]:
    """One outside process behind most wakeups."""
    total = 0
    for proc in ctx.processes:
        for category, ws in proc.by_category.items():
            if category in _PREEMPTIONS:
                continue
            n = _counts(ws)
            if n is None:
                return []
            total += n
    if total <= 0:
        return []
    own = {(t.target.pid, t.target.name) for t in ctx.report.by_thread}
    mine: Dict[str, List[Wakeup]] = defaultdict(list)
    for ws in ctx.index.wakers.values():
        waker = ws[0].waker
        if waker is None or (waker.pid, waker.name) in own:
            continue
        caused = [w for w in ws if w.cause == CAUSE_WAKER]
        if caused:
            mine[_waker_label(ctx, caused[0])].extend(caused)
    if not mine:
        return []
    counted = {name: _counts(ws) or 0 for name, ws in mine.items()}
    name, count = max(counted.items(), key=lambda kv: (kv[1], kv[0]))
    ws = mine[name]
    share = count / total
    if count < DOMINANT_MIN_WAKES or share < DOMINANT_SHARE:
        return []
    cats: Dict[str, int] = defaultdict(int)
    for w in ws:
        cats[w.category] += w.edge.count or 0
    main_cat = max(cats.items(), key=lambda kv: kv[1])[0]
    return [Finding(
        id="dominant-waker", severity=INFO, title=f"Most wakeups come from {name}",
        text=(f"{name} caused {pct(share)} of all wakeups ({count} of {total}), mostly "
              f"{CATEGORY_BY_ID[main_cat].title}."),
        evidence={"waker": name, "wakeups": count, "all_wakeups": total,
                  "share": round(share, 4), "categories": dict(cats),
                  "off_cpu_us": sum(w.edge.total_us for w in ws)})]


def accept_herd(ctx: _Context) -> List[Finding]:
    """New connections waking several workers evenly: each connection wakes them all.

    A heuristic: with one shared listener and no EPOLLEXCLUSIVE every waiting worker is
    woken per connection, so their accept wakeup counts are nearly equal. Per-worker
    listeners (reuse_port) spread connections by hash, which is less even on small counts.
    """
    out: List[Finding] = []
    for proc in ctx.processes:
        per: Dict[object, List[Wakeup]] = defaultdict(list)
        for w in proc.of(ACCEPT):
            if w.target.role == WORKER:
                per[w.target.tid or w.target.comm].append(w)
        counts = {k: _counts(v) for k, v in per.items()}
        if len(counts) < HERD_MIN_WORKERS or any(c is None for c in counts.values()):
            continue
        values = [c for c in counts.values() if c is not None]
        if min(values) < HERD_MIN_WAKES_PER_WORKER or min(values) / max(values) < HERD_BALANCE:
            continue
        comms = sorted(per[k][0].target.comm for k in per)
        out.append(Finding(
            id="accept-herd", severity=WARNING, title="Accept thundering herd",
            text=(f"New connections woke {len(values)} workers{ctx.where(proc)} almost equally "
                  f"often ({min(values)}–{max(values)} accept wakeups each): each connection "
                  "wakes every waiting worker and only one accepts it. Per-worker listeners "
                  "(reuse_port) or exact connection balancing avoid it."),
            evidence={"workers": comms, "accept_wakeups": {per[k][0].target.comm: c
                                                           for k, c in counts.items()},
                      "balance": round(min(values) / max(values), 3)}))
    return out


def hot_worker(ctx: _Context) -> List[Finding]:
    """One worker on the CPU far more than the others."""
    out: List[Finding] = []
    for proc in ctx.processes:
        runs = [(t.target, t.oncpu) for t in proc.threads
                if t.target.role == WORKER and t.oncpu is not None]
        if len(runs) < 2:
            continue
        runs.sort(key=lambda r: (-r[1].total_us, r[0].comm))
        hot, hot_run = runs[0]
        assert hot_run is not None
        others = [r.total_us for _, r in runs[1:] if r is not None]
        median = statistics.median(others)
        busy = hot_run.total_us / (ctx.duration_s * 1e6) if ctx.duration_s else None
        if hot_run.total_us < HOT_RATIO * max(median, 1):
            continue
        if busy is not None and busy < HOT_MIN_BUSY:
            continue
        if busy is None and hot_run.total_us < HOT_MIN_ONCPU_US:
            continue
        busy_text = f"{pct(busy)} of the time, " if busy is not None else "for "
        ratio = hot_run.total_us / median if median > 0 else None
        times = f"{ratio:.0f}× the median of the other workers" if ratio else \
            "while the other workers barely ran"
        out.append(Finding(
            id="hot-worker", severity=WARNING, title=f"Hot worker: {hot.comm}",
            text=(f"{hot.comm}{ctx.where(proc)} was on the CPU {busy_text}"
                  f"{fmt_us(hot_run.total_us)} in all, {times} ({fmt_us(median)}): its connections "
                  "are not spread over the workers. Long-lived HTTP/2 or gRPC connections "
                  "stick to one worker; connection balancing or more client connections "
                  "spread them."),
            evidence={"worker": hot.comm, "tid": hot.tid, "oncpu_us": hot_run.total_us,
                      "busy": None if busy is None else round(busy, 4),
                      "others_median_us": median,
                      "oncpu_by_worker": {t.comm: r.total_us for t, r in runs if r}}))
    return out


def event_loop_stall(ctx: _Context) -> List[Finding]:
    """A long on-CPU run: the thread's event loop handled nothing else meanwhile."""
    out: List[Finding] = []
    for proc in ctx.processes:
        stalls = [(t.target, t.oncpu) for t in proc.threads if t.oncpu is not None
                  and t.oncpu.max_us >= STALL_US
                  and (t.target.role in (MAIN, WORKER) or t.target.role is None)]
        if not stalls:
            continue
        stalls.sort(key=lambda s: -s[1].max_us)
        worst, run = stalls[0]
        assert run is not None
        severity = CRITICAL if run.max_us >= STALL_CRITICAL_US else WARNING
        more = f" (and {plural(len(stalls) - 1, 'more thread')})" if len(stalls) > 1 else ""
        out.append(Finding(
            id="event-loop-stall", severity=severity, title=f"Event loop stalled: {worst.comm}",
            text=(f"{worst.comm}{ctx.where(proc)} once ran {fmt_us(run.max_us)} without "
                  f"giving up the CPU{more}: every event queued on its loop waited that long. "
                  "Look for expensive filters, Lua/Wasm, regexes, stats merges or TLS "
                  "handshakes on that thread."),
            evidence={"thread": worst.comm, "tid": worst.tid, "max_us": run.max_us,
                      "runs": run.count, "threads": {t.comm: r.max_us
                                                     for t, r in stalls if r}}))
    return out


def still_off_cpu(ctx: _Context) -> List[Finding]:
    """Threads off the CPU at the end and not idle by design: stuck on a lock or I/O."""
    stuck: List[Tuple[Pending, Party, str]] = []
    for p in ctx.recording.pending:
        party = ctx.namer.party(p.task)
        frames = [normalize(f) for f in p.stack.kernel_frames]
        if p.preempted:
            if p.waiting_us >= PENDING_RUNQ_MIN_US:
                stuck.append((p, party, "runnable, waiting for a CPU"))
            continue
        if p.waiting_us < PENDING_MIN_US or IDLE_WAIT_FRAMES.intersection(frames):
            continue
        futex = any(f.startswith(("futex_wait", "__futex_wait", "futex_do_wait"))
                    for f in frames)
        if party.role is not None and party.role not in (MAIN, WORKER):
            continue  # Envoy's helper threads idle on condition variables by design
        where = _blocked_in(frames)
        how = (f"blocked on a futex (a lock or condition variable, in {where})" if futex
               else f"blocked in {where}")
        stuck.append((p, party, how))
    if not stuck:
        return []
    stuck.sort(key=lambda s: -s[0].waiting_us)
    p, party, how = stuck[0]
    more = f" (and {plural(len(stuck) - 1, 'more thread')})" if len(stuck) > 1 else ""
    return [Finding(
        id="still-off-cpu", severity=WARNING, title=f"{p.task.comm} never woke",
        text=(f"{p.task.comm} ({party.name}) was still off the CPU when tracing stopped, "
              f"{how} for {fmt_us(p.waiting_us)}{more}. A thread stuck on a lock never "
              "wakes, so no wakeup shows it."),
        evidence={"threads": [{"comm": s[0].task.comm, "tid": s[0].task.tid,
                               "waiting_us": s[0].waiting_us, "state": s[2],
                               "stack": list(s[0].stack.kernel_frames[:8])} for s in stuck]})]


def _blocked_in(frames: Sequence[str]) -> str:
    """The first informative frame of a blocked stack (past the scheduler)."""
    skip = {"__schedule", "schedule", "schedule_timeout", "schedule_hrtimeout_range",
            "schedule_hrtimeout_range_clock", "io_schedule", "schedule_preempt_disabled",
            "finish_task_switch"}
    for name in frames:
        if name not in skip and not name.startswith("__x64_sys") and name:
            return name
    return "the kernel"


def losses(ctx: _Context) -> List[Finding]:
    """Lost stacks or map updates, and the collector flag that makes room."""
    lost = distinct_losses(ctx.recording.lost)
    if not lost:
        return []
    parts = []
    flags: List[str] = []
    for key, n in sorted(lost.items()):
        what, flag = LOSS_COUNTERS.get(key, (key.replace("_", " "), ""))
        parts.append(f"{n} {what}")
        if flag and flag not in flags:
            flags.append(flag)
    wakeups = ctx.report.totals.wakeups
    severity = INFO
    total_lost = sum(lost.values())
    if wakeups and total_lost / max(wakeups, 1) >= LOSS_WARN_SHARE:
        severity = WARNING
    raise_text = f" Raise {' and '.join(flags)} and trace again." if flags else ""
    return [Finding(
        id="losses", severity=severity, title="Data was lost",
        text=(f"The collector lost data ({'; '.join(parts)}), so some wakeups are missing "
              f"or show an empty stack.{raise_text}"),
        evidence={"lost": lost, "flags": flags, "wakeups": wakeups})]


def access_log_flush(ctx: _Context) -> List[Finding]:
    """Futex traffic between the workers and the AccessLogFlush thread."""
    out: List[Finding] = []
    for proc in ctx.processes:
        to_flush = [w for w in proc.of(FUTEX) if w.target.role == ACCESS_LOG_FLUSH]
        worker_waits = [w for w in proc.of(FUTEX)
                        if w.target.role == WORKER and w.detail == "access-log-flush"]
        count = _counts(to_flush) if to_flush else None
        rate = count / ctx.duration_s if count is not None and ctx.duration_s else None
        waited = sum(w.edge.total_us for w in worker_waits)
        if (rate is None or rate < ACCESS_LOG_WAKES_PER_S) and waited < ACCESS_LOG_WORKER_WAIT_US:
            continue
        bits = []
        if rate is not None and rate >= ACCESS_LOG_WAKES_PER_S:
            bits.append(f"workers woke the AccessLogFlush thread {rate:.1f} times a second "
                        f"({count} futex wakeups)")
        if waited >= ACCESS_LOG_WORKER_WAIT_US:
            bits.append(f"workers waited {fmt_us(waited)} on the access-log lock")
        out.append(Finding(
            id="access-log-flush", severity=INFO, title="Access-log flushing",
            text=(f"Access logging{ctx.where(proc)}: {' and '.join(bits)}. A longer "
                  "access_log_flush_interval, a buffered or gRPC access-log sink, or sampling "
                  "reduces it."),
            evidence={"flush_wakeups": count, "per_second": None if rate is None
                      else round(rate, 2), "worker_wait_us": waited}))
    return out


def main_lock(ctx: _Context) -> List[Finding]:
    """Workers blocked on a futex the main thread released (stats merge, TLS updates)."""
    out: List[Finding] = []
    for proc in ctx.processes:
        waits = [w for w in proc.of(FUTEX) if w.target.role == WORKER
                 and w.waker is not None and w.waker.role == MAIN]
        blocked = sum(w.edge.total_us for w in waits)
        if blocked < MAIN_LOCK_WAIT_US:
            continue
        workers = sorted({w.target.comm for w in waits})
        out.append(Finding(
            id="main-thread-lock", severity=WARNING, title="Workers wait on the main thread",
            text=(f"{plural(len(workers), 'worker')}{ctx.where(proc)} waited {fmt_us(blocked)} "
                  "in all on "
                  "locks the main thread released (stats flush and histogram merges, "
                  "thread-local updates). Fewer stats (stats_matcher) or a longer "
                  "stats_flush_interval shorten it."),
            evidence={"workers": workers, "blocked_us": blocked,
                      "wakeups": _counts(waits)}))
    return out


def _top_waker(ctx: _Context, wakeups: Sequence[Wakeup]) -> Optional[str]:
    weights: Dict[str, int] = defaultdict(int)
    for w in wakeups:
        if w.waker is not None and w.cause == CAUSE_WAKER:
            weights[_waker_label(ctx, w)] += w.edge.count if w.edge.count is not None else 1
    if not weights:
        return None
    return max(weights.items(), key=lambda kv: (kv[1], kv[0]))[0]


DETECTORS: Tuple[Callable[[_Context], List[Finding]], ...] = (
    cpu_shortage, dns_storm, xds_churn, cross_thread_posts, main_lock, access_log_flush,
    accept_herd, hot_worker, event_loop_stall, still_off_cpu, dominant_waker, losses,
)
