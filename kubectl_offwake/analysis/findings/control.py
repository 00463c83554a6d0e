"""Control-plane traffic on Envoy's main thread: DNS re-resolution and xDS pushes.

Both are rates, so both need wakeup counts and the trace's duration; an import without
either gets neither finding. The wakeups are what the traffic costs; what it *is* comes
from Envoy's own counters when the collector could read them: DNS resolutions
(``dns.*.resolve_total``) for a storm, accepted xDS updates (``update_success``) for churn.
With the counters read, a rate of wakeups they do not back is no finding (UDP wakes that
are no DNS answers, unix-socket wakes that are admin polls). Without them (admin
unreachable, an import) the finding rests on the wakeups alone and says so.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from ..report import WARNING, Finding, Wakeup
from ..roles import MAIN, WORKER
from .context import Context, Process, thread_id
from .evidence import EVENTFD, UDP, UNIX, counts, top_waker, without_counters

#: DNS answers waking the main thread this often a second is a refresh storm. A
#: STRICT_DNS or LOGICAL_DNS cluster re-resolves every ``dns_refresh_rate``, 5 s by
#: default: about one answer per cluster every 5 s, so five a second takes some 25 such
#: clusters at the default, or a refresh rate cut far below it.
DNS_WAKES_PER_S = 5.0
#: ... and, when Envoy's counters were read, at least this many resolutions a second by
#: Envoy's own count: the same rate, so the answers are its refreshes (one answer wakes
#: the main thread once per resolution).
DNS_RESOLUTIONS_PER_S = 5.0
#: xDS churn by Envoy's count: accepted CDS/LDS/RDS updates this often a second. istiod
#: debounces pushes (100 ms of quiet, at most 10 s by default) and a settled mesh pushes
#: only when something changes, minutes apart; an update every two seconds, sustained
#: over the trace, is configuration that never settles.
XDS_UPDATES_PER_S = 0.5
#: Without the counters: pilot-agent relays istiod's pushes to Envoy's main thread over a
#: unix socket, waking it at least this often a second. A push every second, sustained,
#: means the configuration never settles (pilot-agent's own admin polls also use a unix
#: socket, hence the eventfd fan-out required next).
XDS_UNIX_WAKES_PER_S = 1.0
#: ... followed by at least this many eventfd wakes of workers by the main thread: an
#: applied update is posted to every worker, so ten is several updates reaching the
#: workers on a small proxy, not one push that happened to fall into the trace.
XDS_FANOUT_MIN_WAKES = 10


def dns_storm(ctx: Context, proc: Process) -> Optional[Finding]:
    """The main thread woken by UDP answers many times a second, and (when Envoy's
    counters were read) Envoy resolving as often."""
    if ctx.duration_s is None:
        return None
    udp = proc.woken(UDP, MAIN)
    count = counts(udp)
    if not udp or count is None:
        return None
    rate = count / ctx.duration_s
    if rate < DNS_WAKES_PER_S:
        return None
    top = top_waker(udp)
    source = f", mostly from {top}" if top else ""
    evidence: Dict[str, object] = {"wakeups": count, "per_second": round(rate, 2),
                                   "duration_s": ctx.duration_s, "waker": top}
    envoy = proc.counted
    if envoy is not None:
        resolved = envoy.per_second(envoy.dns_resolutions) or 0.0
        if resolved < DNS_RESOLUTIONS_PER_S:
            return None  # UDP wakes Envoy's resolver does not account for
        backing = (f"; Envoy counted {envoy.dns_resolutions} DNS resolutions "
                   f"({envoy.dns_basis}), {resolved:.1f} a second")
        evidence.update({"resolutions": envoy.dns_resolutions,
                         "resolutions_per_second": round(resolved, 2),
                         "counters": envoy.dns_basis, "basis": "envoy counters"})
    else:
        backing = f"; {without_counters(proc.envoy)}, so this rests on the UDP wakeups alone"
        evidence.update({"resolutions": None, "resolutions_per_second": None,
                         "counters": None, "basis": "wakeups"})
    return Finding(
        id="dns-storm", severity=WARNING, title="DNS refresh storm",
        text=(f"DNS answers woke Envoy's main thread{ctx.where(proc)} {rate:.1f} times a "
              f"second ({count} UDP wakeups in {ctx.duration_s:.0f} s{source}){backing}. "
              "Fewer STRICT_DNS/LOGICAL_DNS clusters or a longer dns_refresh_rate would "
              "calm it."),
        evidence=evidence)


def xds_churn(ctx: Context, proc: Process) -> Optional[Finding]:
    """Frequent xDS updates: by Envoy's count when it was read, else unix-socket wakes of
    main (pilot-agent's xDS proxy) followed by an eventfd fan-out to the workers."""
    if ctx.duration_s is None:
        return None
    unix = [w for w in proc.woken(UNIX, MAIN) if w.waker is not None and w.waker.role is None]
    fanout = [w for w in proc.woken(EVENTFD, WORKER)
              if w.waker is not None and w.waker.role == MAIN]
    unix_count, fan_count = counts(unix), counts(fanout)
    if unix_count is None or fan_count is None:
        return None
    workers = {thread_id(w.target) for w in fanout}
    all_workers = {thread_id(t.target) for t in proc.threads if t.target.role == WORKER}
    rate = unix_count / ctx.duration_s
    evidence: Dict[str, object] = {
        "unix_wakeups": unix_count, "unix_per_second": round(rate, 2),
        "waker": top_waker(unix) if unix else None,
        "eventfd_wakeups": fan_count, "workers_reached": len(workers),
        "workers": len(all_workers), "duration_s": ctx.duration_s}
    envoy = proc.counted
    if envoy is not None:
        updates = envoy.per_second(envoy.xds_updates) or 0.0
        if updates < XDS_UPDATES_PER_S:
            return None
        evidence.update({"updates": envoy.xds_updates, "updates_per_second": round(updates, 2),
                         "basis": "envoy counters"})
        said = (f"Envoy accepted {envoy.xds_updates} xDS updates{ctx.where(proc)} "
                f"(cds/lds/rds update_success), {updates:.1f} a second")
        return _xds_finding(said + _xds_cost(unix, fanout, workers, all_workers), evidence)
    if not unix or not fanout or rate < XDS_UNIX_WAKES_PER_S \
            or fan_count < XDS_FANOUT_MIN_WAKES or len(workers) < min(2, len(all_workers)):
        return None
    evidence.update({"updates": None, "updates_per_second": None, "basis": "wakeups"})
    said = (f"{evidence['waker'] or 'A local process'} woke Envoy's main thread"
            f"{ctx.where(proc)} over a unix socket {rate:.1f} times a second ({unix_count} "
            f"wakeups), and the main thread then woke {len(workers)} of {len(all_workers)} "
            f"workers through eventfd {fan_count} times to apply the updates; "
            f"{without_counters(proc.envoy)}, so this rests on those wakeups alone")
    return _xds_finding(said, evidence)


def _xds_cost(unix: List[Wakeup], fanout: List[Wakeup], workers: set,
              all_workers: set) -> str:
    """What the updates cost in wakeups, as far as the trace saw them."""
    parts = []
    if unix:
        parts.append(f"{counts(unix)} unix-socket wakeups of the main thread")
    if fanout:
        parts.append(f"{counts(fanout)} eventfd wakeups of {len(workers)} of "
                     f"{len(all_workers)} workers by the main thread")
    return f"; the trace saw {' and '.join(parts)}" if parts else ""


def _xds_finding(said: str, evidence: Dict[str, object]) -> Finding:
    return Finding(
        id="xds-churn", severity=WARNING, title="xDS push churn",
        text=(f"{said}. Look for frequent pushes from istiod and scope configuration with "
              "Sidecar resources."),
        evidence=evidence)
