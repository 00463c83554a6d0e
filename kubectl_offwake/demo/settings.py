"""How the demo node is built: every knob a scenario turns, in one frozen value.

``MeshSettings()`` is the rich mixed demo (``kubectl offwake demo`` without
``--scenario``); each scenario in ``scenarios.py`` is these settings with a few knobs
turned. ``mesh.DemoMesh`` reads nothing else, so what a scenario does is all here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass(frozen=True)
class Load:
    """``wrk`` through Envoy's inbound listener, paced per connection (Debian's wrk has no
    rate option; a Lua ``delay()`` per request keeps it gentle)."""

    connections: int = 2
    #: Pause before each request on a connection: the rate is about connections×1000/delay.
    delay_ms: int = 5
    #: ``Connection: close`` on every request, so every request is a new connection.
    new_connection: bool = False
    #: Extra request header bytes (``x-offwake-pad``), which a verbose access log repeats.
    header_bytes: int = 0

    def approx_rate(self) -> int:
        """Requests per second if each request takes well under ``delay_ms``."""
        return int(self.connections * 1000 / max(1, self.delay_ms))


@dataclass(frozen=True)
class CpuQuota:
    """A CFS quota on Envoy's cgroup: ``quota_us`` of CPU time per ``period_us``."""

    quota_us: int
    period_us: int = 100_000

    def describe(self) -> str:
        return (f"{self.quota_us / 1000:g} ms of CPU per {self.period_us / 1000:g} ms "
                f"({self.quota_us / self.period_us:.0%} of one CPU)")


@dataclass(frozen=True)
class LuaStall:
    """A Lua filter that spins on the CPU for ``spin_ms`` on a worker's first request in
    every ``every_s``-th second of the clock: blocking work on the worker's event loop.

    Timed by the clock rather than by a request count, so every worker that has requests
    stalls at the same rate however the connections landed on the workers."""

    every_s: int
    spin_ms: int


@dataclass(frozen=True)
class AccessLog:
    """Envoy's file access log on the inbound listener."""

    #: How often Envoy's AccessLogFlush thread flushes (``--file-flush-interval-msec``).
    flush_ms: int = 200
    #: Access loggers writing each request (several sinks, as meshes that log to a file
    #: and to stdout have).
    loggers: int = 1
    #: Log the padding header too (a verbose format that logs request headers).
    log_headers: bool = False


@dataclass(frozen=True)
class MeshSettings:
    """Everything the demo node does; the defaults are the mixed demo."""

    #: Envoy's worker threads.
    concurrency: int = 2
    load: Load = field(default_factory=Load)
    #: kubelet's readiness probes (new connection each) from the host.
    probe_interval_s: float = 0.1
    #: pilot-agent's admin polls over the unix socket (``/ready``, every Nth ``/stats``).
    agent_interval_s: float = 0.1
    agent_stats_every: int = 10
    #: How often Envoy asks pilot-agent for its clusters (REST xDS over a unix socket) ...
    xds_refresh_ms: int = 500
    #: ... and whether every answer changes a cluster (a push the main thread hands to
    #: every worker) or repeats the same version.
    xds_push: bool = True
    #: How often Envoy re-resolves the STRICT_DNS upstream through dnsmasq.
    dns_refresh_ms: int = 100
    #: Envoy's stats flush (a periodic fan-out from the main thread to the workers).
    stats_flush_ms: int = 1000
    #: The CPU hog next to Envoy and its nice value (None: no hog).
    hog_nice: Optional[int] = -5
    #: A CPU limit on Envoy's cgroup (None: none).
    cpu_quota: Optional[CpuQuota] = None
    #: One listening socket per worker (Envoy's default) or one shared socket.
    reuse_port: bool = True
    #: The upstream app's think time per request.
    upstream_delay_ms: int = 0
    lua_stall: Optional[LuaStall] = None
    access_log: AccessLog = field(default_factory=AccessLog)


def _knobs(s: MeshSettings) -> Dict[str, str]:
    """Each knob of ``s`` as a phrase, keyed by knob (the words of the scenario listing)."""
    load = s.load
    how = ", a new connection each" if load.new_connection else ""
    pad = f", {load.header_bytes} B padding header" if load.header_bytes else ""
    log = s.access_log
    return {
        "concurrency": f"{s.concurrency} Envoy workers",
        "load": f"at most {load.approx_rate()} requests/s on {load.connections} "
                f"connection{'s' if load.connections != 1 else ''}{how}{pad}",
        "probes": f"kubelet probes every {s.probe_interval_s:g} s",
        "agent": f"pilot-agent polls the admin every {s.agent_interval_s:g} s",
        "xds": (f"pilot-agent pushes a changed cluster every {s.xds_refresh_ms} ms (xDS)"
                if s.xds_push else f"no xDS pushes (Envoy polls every {s.xds_refresh_ms} ms)"),
        "dns": f"DNS refresh every {s.dns_refresh_ms} ms",
        "stats": f"stats flush every {s.stats_flush_ms} ms",
        "hog": ("no CPU hog" if s.hog_nice is None
                else f"a CPU hog (nice {s.hog_nice}) on Envoy's CPU"),
        "quota": ("no CPU limit" if s.cpu_quota is None
                  else f"Envoy's cgroup limited to {s.cpu_quota.describe()}"),
        "listener": ("a listening socket per worker (reuse_port)" if s.reuse_port else
                     "one listening socket shared by the workers (enable_reuse_port: false)"),
        "upstream": (f"the upstream answers after {s.upstream_delay_ms} ms"
                     if s.upstream_delay_ms else "the upstream answers at once"),
        "lua": ("no Lua filter" if s.lua_stall is None else
                f"a Lua filter spins {s.lua_stall.spin_ms} ms on each worker every "
                f"{s.lua_stall.every_s} s"),
        "access_log": (f"{log.loggers} access logger{'s' if log.loggers != 1 else ''} "
                       f"{'logging the padding header ' if log.log_headers else ''}"
                       f"flushed every {log.flush_ms} ms"),
    }


def describe(settings: MeshSettings, base: Optional[MeshSettings] = None) -> List[str]:
    """What ``settings`` sets up, as phrases; with ``base``, only where it differs."""
    mine = _knobs(settings)
    if base is None:
        return list(mine.values())
    theirs = _knobs(base)
    return [phrase for knob, phrase in mine.items() if phrase != theirs[knob]]
