"""Control-plane traffic on Envoy's main thread: DNS re-resolution and xDS pushes.

Both are rates, so both need wakeup counts and the trace's duration; an import without
either gets neither finding.
"""

from __future__ import annotations

from typing import Optional

from ..report import WARNING, Finding
from ..roles import MAIN, WORKER
from .context import Context, Process, thread_id
from .evidence import EVENTFD, UDP, UNIX, counts, top_waker

#: DNS answers waking the main thread this often a second is a refresh storm. A
#: STRICT_DNS or LOGICAL_DNS cluster re-resolves every ``dns_refresh_rate``, 5 s by
#: default: about one answer per cluster every 5 s, so five a second takes some 25 such
#: clusters at the default, or a refresh rate cut far below it.
DNS_WAKES_PER_S = 5.0
#: xDS churn: pilot-agent relays istiod's pushes to Envoy's main thread over a unix
#: socket, waking it at least this often a second. istiod debounces pushes (100 ms of
#: quiet, at most 10 s by default), so a settled mesh pushes seldom; a push every second,
#: sustained, means the configuration never settles.
XDS_UNIX_WAKES_PER_S = 1.0
#: ... followed by at least this many eventfd wakes of workers by the main thread: an
#: applied update is posted to every worker, so ten is several updates reaching the
#: workers on a small proxy, not one push that happened to fall into the trace.
XDS_FANOUT_MIN_WAKES = 10


def dns_storm(ctx: Context, proc: Process) -> Optional[Finding]:
    """The main thread woken by UDP answers many times a second."""
    if ctx.duration_s is None:
        return None
    udp = proc.woken(UDP, MAIN)
    count = counts(udp)
    if not udp or count is None:
        return None
    rate = count / ctx.duration_s
    if rate < DNS_WAKES_PER_S:
        return None
    top = top_waker(ctx.recording, udp)
    source = f", mostly from {top}" if top else ""
    return Finding(
        id="dns-storm", severity=WARNING, title="DNS refresh storm",
        text=(f"DNS answers woke Envoy's main thread{ctx.where(proc)} {rate:.1f} times a "
              f"second ({count} UDP wakeups in {ctx.duration_s:.0f} s{source}). Fewer "
              "STRICT_DNS/LOGICAL_DNS clusters or a longer dns_refresh_rate would calm it."),
        evidence={"wakeups": count, "per_second": round(rate, 2),
                  "duration_s": ctx.duration_s, "waker": top})


def xds_churn(ctx: Context, proc: Process) -> Optional[Finding]:
    """Unix-socket wakes of main (pilot-agent's xDS proxy), then eventfd fan-out to workers."""
    if ctx.duration_s is None:
        return None
    unix = [w for w in proc.woken(UNIX, MAIN) if w.waker is not None and w.waker.role is None]
    fanout = [w for w in proc.woken(EVENTFD, WORKER)
              if w.waker is not None and w.waker.role == MAIN]
    unix_count, fan_count = counts(unix), counts(fanout)
    if not unix or not fanout or unix_count is None or fan_count is None:
        return None
    rate = unix_count / ctx.duration_s
    workers = {thread_id(w.target) for w in fanout}
    all_workers = {thread_id(t.target) for t in proc.threads if t.target.role == WORKER}
    if rate < XDS_UNIX_WAKES_PER_S or fan_count < XDS_FANOUT_MIN_WAKES \
            or len(workers) < min(2, len(all_workers)):
        return None
    top = top_waker(ctx.recording, unix)
    return Finding(
        id="xds-churn", severity=WARNING, title="xDS push churn",
        text=(f"{top or 'A local process'} woke Envoy's main thread{ctx.where(proc)} over "
              f"a unix socket {rate:.1f} times a second ({unix_count} wakeups), and the "
              f"main thread then woke {len(workers)} of {len(all_workers)} workers "
              f"through eventfd {fan_count} times to apply the updates. Look for frequent "
              "pushes from istiod and scope configuration with Sidecar resources."),
        evidence={"unix_wakeups": unix_count, "unix_per_second": round(rate, 2),
                  "waker": top, "eventfd_wakeups": fan_count,
                  "workers_reached": len(workers), "workers": len(all_workers),
                  "duration_s": ctx.duration_s})
