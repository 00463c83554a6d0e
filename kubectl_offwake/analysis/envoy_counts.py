"""What Envoy counted itself over the trace, in the terms the findings compare with wakeups.

The collector sends the rise of Envoy's admin counters (``EnvoyStats.delta``, only the
counters that moved) and its listening sockets. This module is the one place that knows
which counters mean what: connections accepted per listener and per worker, DNS
resolutions, xDS updates, watchdog misses, access-log flushes. With the admin read, a
counter missing from the delta did not move, so it counts as 0; without it (``admin`` is
None) nothing is known and every count is ``None``.

:func:`beside_wakeups` lines those counts up with the wakeups that go with them (connections
with accept wakeups of the workers, DNS resolutions with UDP wakeups of the main thread, ...):
the report shows these rows in every format, and the findings rest on the same numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .model import EnvoyStats, Recording
from .report import Wakeup
from .roles import ACCESS_LOG_FLUSH, MAIN, WORKER

#: ``listener.<stat prefix>[.worker_N|.main_thread].downstream_cx_total``
_LISTENER = re.compile(r"^listener\.(?P<prefix>.+?)(?:\.(?P<thread>worker_\d+|main_thread))?"
                       r"\.downstream_cx_total$")
#: The admin listener's stat prefix: its connections are the admin's, served by main.
_ADMIN_PREFIX = "admin"
#: The resolver's own count of resolutions (c-ares, getaddrinfo, ...).
_DNS_RESOLVES = re.compile(r"^dns\.[a-z_]+\.resolve_total$")
#: A cluster's refresh attempts: for STRICT_DNS/LOGICAL_DNS clusters, one per resolution.
_CLUSTER_REFRESH = re.compile(r"^cluster\.(?!xds-grpc\.).+\.update_attempt$")
#: Accepted xDS updates: clusters, listeners and routes (ADS or REST alike).
_XDS_UPDATES = re.compile(r"^(cluster_manager\.cds|listener_manager\.lds|.+\.rds\..+)"
                          r"\.update_success$")
#: Watchdog misses (and mega-misses) per thread: ``server.worker_N.watchdog_miss``,
#: ``server.main_thread.watchdog_mega_miss``.
_WATCHDOG = re.compile(r"^server\.(?P<thread>worker_\d+|main_thread)\.watchdog_(?P<kind>mega_)?"
                       r"miss$")
_FLUSHED = re.compile(r"^(filesystem|access_log_file)\.flushed_by_timer$")


@dataclass(frozen=True)
class EnvoyCounts:
    """One Envoy's counts over the trace (``None``: its admin could not be read)."""

    pid: Optional[int]
    #: Seconds between the collector's two reads of the counters; None when not read.
    window_s: Optional[float]
    #: Listening TCP sockets per address at the end (known even without the admin).
    listeners: Dict[str, int]
    #: Connections the traffic listeners accepted (the admin's own listener left out).
    connections: Optional[int] = None
    #: The same per worker thread name (``worker_0``: 438).
    connections_by_worker: Dict[str, int] = field(default_factory=dict)
    #: DNS resolutions, and the counters they were read from.
    dns_resolutions: Optional[int] = None
    dns_basis: str = ""
    #: Accepted xDS updates (CDS, LDS, RDS).
    xds_updates: Optional[int] = None
    #: Watchdog misses per Envoy thread name (``worker_1``, ``main_thread``): misses, and
    #: mega-misses apart.
    watchdog_misses: Dict[str, int] = field(default_factory=dict)
    watchdog_mega_misses: Dict[str, int] = field(default_factory=dict)
    #: Access-log buffers flushed by the flush timer.
    access_log_flushes: Optional[int] = None
    #: The admin address the counters were read from (``EnvoyStats.admin``).
    admin: Optional[str] = None

    @property
    def read(self) -> bool:
        """Whether Envoy's admin counters were read (else only the sockets are known)."""
        return self.window_s is not None

    def per_second(self, count: Optional[int]) -> Optional[float]:
        """A count over the counters' window, per second."""
        if count is None or not self.window_s:
            return None
        return count / self.window_s

    def worker_connections(self, comm: str) -> int:
        """The connections the worker thread named ``comm`` (``wrk:worker_0``) accepted."""
        return self.connections_by_worker.get(thread_stat_name(comm) or "", 0)

    def shared_listeners(self) -> List[str]:
        """Traffic listeners (not on loopback) with one listening socket for all workers."""
        return sorted(a for a, n in self.listeners.items() if n == 1 and not _loopback(a))


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host in ("[::1]", "::1", "localhost")


def thread_stat_name(comm: str) -> Optional[str]:
    """The name Envoy's per-thread counters use for a thread: ``wrk:worker_1`` is
    ``worker_1``, the main thread ``envoy`` is ``main_thread``."""
    if comm == "envoy":
        return "main_thread"
    if comm.startswith("wrk:worker_"):
        return comm[len("wrk:"):]
    return None


def counts_of(stats: EnvoyStats) -> EnvoyCounts:
    """What one ``envoy_stats`` record says, in the findings' terms."""
    listeners = dict(stats.listeners)
    if stats.admin is None or stats.window_s is None:
        return EnvoyCounts(stats.pid, None, listeners, admin=stats.admin)
    delta = stats.delta
    resolutions, basis = _dns(delta)
    return EnvoyCounts(
        stats.pid, stats.window_s, listeners,
        connections=_connections(delta, listeners),
        connections_by_worker=_by_worker(delta),
        dns_resolutions=resolutions, dns_basis=basis,
        xds_updates=sum(v for k, v in delta.items() if _XDS_UPDATES.match(k)),
        watchdog_misses=_watchdog(delta, mega=False),
        watchdog_mega_misses=_watchdog(delta, mega=True),
        access_log_flushes=sum(v for k, v in delta.items() if _FLUSHED.match(k)),
        admin=stats.admin,
    )


def _listener_totals(delta: Dict[str, int]) -> Dict[str, int]:
    """Connections per listener stat prefix (the listener-wide counters only)."""
    out: Dict[str, int] = {}
    for name, value in delta.items():
        m = _LISTENER.match(name)
        if m and not m.group("thread") and m.group("prefix") != _ADMIN_PREFIX:
            out[m.group("prefix")] = value
    return out


def _connections(delta: Dict[str, int], listeners: Dict[str, int]) -> int:
    """Connections accepted on the listening sockets Envoy holds. A listener without a
    socket of its own (``bind_to_port: false``, handed connections by another) would
    count a connection twice, so only listeners whose stat prefix is a bound address
    (``0.0.0.0_15006`` for ``0.0.0.0:15006``) count, when any is."""
    totals = _listener_totals(delta)
    bound = {_stat_prefix(a) for a in listeners}
    mine = [v for prefix, v in totals.items() if prefix in bound]
    return sum(mine) if mine else sum(totals.values())


def _stat_prefix(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{host}_{port}"


def _by_worker(delta: Dict[str, int]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for name, value in delta.items():
        m = _LISTENER.match(name)
        if m and m.group("prefix") != _ADMIN_PREFIX and (m.group("thread") or "").startswith(
                "worker_"):
            out[m.group("thread")] = out.get(m.group("thread"), 0) + value
    return dict(sorted(out.items()))


def _dns(delta: Dict[str, int]) -> Tuple[int, str]:
    """Resolutions, and the counters they come from: the resolver's own; when none of
    those moved (an Envoy without them), the clusters' refresh attempts."""
    resolves = sum(v for k, v in delta.items() if _DNS_RESOLVES.match(k))
    if resolves:
        return resolves, "dns.*.resolve_total"
    return (sum(v for k, v in delta.items() if _CLUSTER_REFRESH.match(k)),
            "cluster.*.update_attempt")


def _watchdog(delta: Dict[str, int], mega: bool) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for name, value in delta.items():
        m = _WATCHDOG.match(name)
        if m and bool(m.group("kind")) == mega:
            out[m.group("thread")] = value
    return dict(sorted(out.items()))


# --------------------------------------------------------------------- beside the wakeups

@dataclass(frozen=True)
class Beside:
    """One thing Envoy counted, next to what the trace saw of it."""

    what: str          # "connections accepted"
    envoy: int
    counters: str      # where Envoy's number comes from: "listener.*.downstream_cx_total"
    trace: str         # "accept wakeups of workers"
    trace_value: Optional[int]
    trace_unit: str = "wakeups"  # or "us": a duration


@dataclass(frozen=True)
class EnvoySide:
    """One traced Envoy: its counts and the rows the report shows beside the wakeups."""

    counts: EnvoyCounts
    rows: Tuple[Beside, ...]


def _count(wakeups: Sequence[Wakeup], category: str, role: str) -> int:
    return sum(w.edge.count or 0 for w in wakeups
               if w.category == category and w.target.role == role)


def beside_wakeups(counts: EnvoyCounts, wakeups: Sequence[Wakeup],
                   busy_us: Dict[str, int]) -> Tuple[Beside, ...]:
    """The rows for one Envoy: each count that moved, with the wakeups that go with it.

    ``wakeups`` are that Envoy's; ``busy_us`` is each thread's longest busy period by its
    counters' thread name (``worker_1``), set beside its watchdog misses.
    """
    if not counts.read:
        return ()
    rows: List[Beside] = []

    def add(what: str, envoy: Optional[int], counters: str, trace: str,
            value: Optional[int], unit: str = "wakeups") -> None:
        if envoy or value:
            rows.append(Beside(what, envoy or 0, counters, trace, value, unit))

    add("connections accepted", counts.connections, "listener.*.downstream_cx_total",
        "accept wakeups of workers", _count(wakeups, "tcp-accept", WORKER))
    add("DNS resolutions", counts.dns_resolutions, counts.dns_basis,
        "UDP wakeups of the main thread", _count(wakeups, "udp-receive", MAIN))
    add("xDS updates", counts.xds_updates, "cds/lds/rds update_success",
        "unix-socket wakeups of the main thread", _count(wakeups, "unix-socket", MAIN))
    add("access-log flushes", counts.access_log_flushes, "filesystem.flushed_by_timer",
        "futex wakeups of AccessLogFlush", _count(wakeups, "futex-wake", ACCESS_LOG_FLUSH))
    for thread, misses in counts.watchdog_misses.items():
        add(f"watchdog misses of {thread}", misses, f"server.{thread}.watchdog_miss",
            "its longest busy period", busy_us.get(thread), "us")
    return tuple(rows)


def envoy_sides(recording: Recording, wakeups: Sequence[Wakeup]) -> List[EnvoySide]:
    """Every traced Envoy's counts and rows, in the recording's order."""
    out = []
    for stats in recording.envoy_stats:
        counts = counts_of(stats)
        mine = [w for w in wakeups if w.target.pid == stats.pid]
        busy: Dict[str, int] = {}
        for run in recording.oncpu:
            name = thread_stat_name(run.task.comm) if run.task.pid == stats.pid else None
            if name is not None:
                busy[name] = run.max_busy_us if run.max_busy_us is not None else run.max_us
        out.append(EnvoySide(counts, beside_wakeups(counts, mine, busy)))
    return out
