"""Envoy's threads waking each other: posts to the workers, locks held by the main thread,
and the workers' traffic with the access-log flush thread.

Which thread is which comes from Envoy's thread names (:mod:`..roles`); what a post or a
futex was for comes from the classifier's detail, read from the waker's user frames when
the stack has them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional

from ...units import fmt_us
from ..report import INFO, WARNING, Finding, Party, Severity, Wakeup
from ..roles import ACCESS_LOG_FLUSH, MAIN, WORKER
from .context import Context, Process, thread_id
from .evidence import EVENTFD, FUTEX, counts, is_preemption
from .wording import and_more, pct, plural

#: Cross-thread posts: at least this share of a worker's wakeups are eventfd pokes from
#: other Envoy threads. A worker is there to serve traffic; once posts are the majority,
#: the other threads' work, not requests, sets its rhythm.
POST_SHARE_MIN = 0.5
#: ... and at least this many posts: a share of a handful of wakeups is chance.
POST_MIN_WAKES = 20
#: ... or, when the source has no counts (BCC imports), this much off-CPU time ended by
#: posts: 10 ms, the floor the CPU-shortage finding uses for time that matters.
POST_MIN_US = 10_000
#: Wake details that mean another Envoy thread posted work.
POST_DETAILS = frozenset(("cross-thread-post", "thread-local-update", "stats-flush"))
#: Workers blocked on futexes the main thread woke them from for this share of the trace:
#: at 1% (10 ms a second) the workers' loops visibly stall on the main thread, where an
#: uncontended lock costs microseconds and a rare contended one, or one made longer by
#: the main thread losing its CPU while it held the lock, is noise in a long trace.
MAIN_LOCK_SHARE = 0.01
#: ... or, without the trace's duration (some imports), this long in all: 10 ms, the same
#: share of a one-second trace.
MAIN_LOCK_WAIT_US = 10_000
#: Access-log flushing: futex wakes of the AccessLogFlush thread a second. It is woken when
#: a log's buffer reaches 64 KiB or every ``--file-flush-interval-msec`` (10 s by default),
#: so ten a second means some 640 KiB/s of access log or an interval cut to 100 ms.
ACCESS_LOG_WAKES_PER_S = 10.0
#: ... and from this rate on it is a warning: a hundred flushes a second is an interval of
#: 10 ms or less, or some 6 MiB/s of log lines; the flush thread, and the main thread that
#: times the flushes, then take the sidecar's CPU every few milliseconds, next to the
#: workers that serve requests.
ACCESS_LOG_WARN_PER_S = 100.0
#: ... or workers blocked this long in all on the access-log lock: 10 ms, as for the
#: main-thread lock, a visible stall of the workers' loops.
ACCESS_LOG_WORKER_WAIT_US = 10_000


@dataclass(frozen=True)
class PostShare:
    """How much of one worker's waking was posts, by count or (without counts) by time."""

    share: float
    posts: int
    total: int
    basis: str  # "wakeups" or "off-CPU time"
    worker: Party
    wakeups: List[Wakeup]  # the posts


def cross_thread_posts(ctx: Context, proc: Process) -> Optional[Finding]:
    """Eventfd pokes from other Envoy threads dominating a worker's wakeups."""
    if not any(_is_post(w) for w in proc.of(EVENTFD)):
        return None
    by_worker: Dict[object, List[Wakeup]] = defaultdict(list)
    for w in proc.workers:
        if not is_preemption(w):
            by_worker[thread_id(w.target)].append(w)
    hits = [h for h in (_post_share(ws) for ws in by_worker.values()) if h is not None]
    if not hits:
        return None
    hits.sort(key=lambda h: (-h.share, h.worker.comm))
    worst = hits[0]
    from_threads = sorted({w.waker.comm for w in worst.wakeups if w.waker is not None})
    amount = (f"{worst.posts} of {worst.total}" if worst.basis == "wakeups"
              else f"{fmt_us(worst.posts)} of {fmt_us(worst.total)} off-CPU")
    return Finding(
        id="cross-thread-posts", severity=INFO, title="Cross-thread posts dominate",
        text=(f"{pct(worst.share)} of {worst.worker.comm}'s wakeups{ctx.where(proc)} "
              f"({amount}) were eventfd pokes from other Envoy threads "
              f"({', '.join(from_threads)}), not traffic"
              f"{and_more(len(hits) - 1, 'more worker')}: configuration, stats or "
              "thread-local updates keep the workers busy."),
        evidence={"worker": worst.worker.comm, "tid": worst.worker.tid,
                  "share": round(worst.share, 4), "posts": worst.posts, "all": worst.total,
                  "basis": worst.basis, "from": from_threads,
                  "workers": [{"comm": h.worker.comm, "tid": h.worker.tid,
                               "share": round(h.share, 4)} for h in hits]})


def _post_share(ws: List[Wakeup]) -> Optional[PostShare]:
    """One worker's posts, when they are enough of its waking to report."""
    posts = [w for w in ws if _is_post(w)]
    if not posts:
        return None
    n_all, n_posts = counts(ws), counts(posts)
    basis = "wakeups"
    if n_all is None or n_posts is None:
        n_all = sum(w.edge.total_us for w in ws)
        n_posts = sum(w.edge.total_us for w in posts)
        basis = "off-CPU time"
        if n_posts < POST_MIN_US:
            return None
    elif n_posts < POST_MIN_WAKES:
        return None
    if n_all <= 0 or n_posts / n_all < POST_SHARE_MIN:
        return None
    return PostShare(n_posts / n_all, n_posts, n_all, basis, ws[0].target, posts)


def _is_post(w: Wakeup) -> bool:
    """An eventfd wake by another Envoy thread: by the classifier's detail when the waker's
    user frames said so, else by the waker being in the same process or an Envoy thread."""
    if w.category != EVENTFD or w.waker is None:
        return False
    if w.detail in POST_DETAILS:
        return True
    same_process = w.waker.pid is not None and w.waker.pid == w.target.pid
    return same_process or w.waker.role is not None


def main_lock(ctx: Context, proc: Process) -> Optional[Finding]:
    """Workers blocked on a futex the main thread woke them from (a lock it released or a
    condition it signalled)."""
    waits = [w for w in proc.woken(FUTEX, WORKER) if w.waker is not None
             and w.waker.role == MAIN]
    blocked = sum(w.edge.total_us for w in waits)
    floor = MAIN_LOCK_SHARE * ctx.duration_s * 1e6 if ctx.duration_s else MAIN_LOCK_WAIT_US
    if not waits or blocked < floor:
        return None
    workers = sorted({w.target.comm for w in waits})
    details = sorted({w.detail for w in waits if w.detail})
    seen = (f" Its stack shows {', '.join(details)}." if details else
            " Its user frames do not say what for; stats flushes and histogram merges and "
            "thread-local updates are the usual reasons.")
    return Finding(
        id="main-thread-lock", severity=WARNING, title="Workers wait on the main thread",
        text=(f"{plural(len(workers), 'worker')}{ctx.where(proc)} waited {fmt_us(blocked)} "
              f"in all on a futex until the main thread woke them ({counts(waits)} "
              f"wakeups): a lock it held, or a condition it signalled.{seen} Fewer stats "
              "(stats_matcher) or a longer stats_flush_interval shorten the usual ones."),
        evidence={"workers": workers, "blocked_us": blocked, "wakeups": counts(waits),
                  "details": details})


def access_log_flush(ctx: Context, proc: Process) -> Optional[Finding]:
    """Futex traffic between Envoy's threads and the AccessLogFlush thread."""
    to_flush = proc.woken(FUTEX, ACCESS_LOG_FLUSH)
    worker_waits = [w for w in proc.woken(FUTEX, WORKER) if w.detail == "access-log-flush"]
    count = counts(to_flush) if to_flush else None
    rate = count / ctx.duration_s if count is not None and ctx.duration_s else None
    waited = sum(w.edge.total_us for w in worker_waits)
    flushes_often = rate is not None and rate >= ACCESS_LOG_WAKES_PER_S
    workers_wait = waited >= ACCESS_LOG_WORKER_WAIT_US
    if not flushes_often and not workers_wait:
        return None
    bits = []
    if flushes_often:
        bits.append(f"the AccessLogFlush thread was woken {rate:.1f} times a second "
                    f"({count} futex wakeups{_flush_wakers(to_flush)})")
    if workers_wait:
        bits.append(f"workers waited {fmt_us(waited)} on the access-log lock")
    envoy = proc.counted
    flushed = envoy.access_log_flushes if envoy is not None else None
    counted = (f" Envoy counted {flushed} flushes by its flush timer "
               "(filesystem.flushed_by_timer)." if flushed else "")
    severity: Severity = WARNING if rate is not None and rate >= ACCESS_LOG_WARN_PER_S \
        else INFO
    return Finding(
        id="access-log-flush", severity=severity, title="Access-log flushing",
        text=(f"Access logging{ctx.where(proc)}: {'; '.join(bits)}.{counted} A longer "
              "flush interval (--file-flush-interval-msec), a buffered or gRPC access-log "
              "sink, or sampling reduces it."),
        evidence={"flush_wakeups": count, "per_second": None if rate is None
                  else round(rate, 2), "worker_wait_us": waited, "timer_flushes": flushed})


def _flush_wakers(wakeups: List[Wakeup]) -> str:
    """Who woke the flush thread, by Envoy role: the main thread times the flushes, a
    worker wakes it when a log buffer fills."""
    by: Dict[str, int] = defaultdict(int)
    for w in wakeups:
        role = w.waker.role if w.waker is not None else None
        by[_FLUSH_WAKER.get(role or "", "other threads")] += w.edge.count or 0
    parts = [f"{n} by {who}" for who, n in sorted(by.items(), key=lambda kv: -kv[1]) if n]
    return f", {', '.join(parts)}" if parts else ""


_FLUSH_WAKER = {MAIN: "the main thread's flush timer",
                WORKER: "workers filling a log buffer"}
