"""The demo's scenarios: one real condition each, on the real Envoy. The one table of them.

Each row is a name, a one-line summary, the findings (by id, warning or critical) its
report is expected to raise, and the ``MeshSettings`` that make it (what the demo sets up
is worded from those settings, so the words cannot drift from what runs). ``healthy`` is
the baseline the faults start from: light load, no neighbour, Istio-like intervals (DNS
refresh 5 s as Envoy's default, stats flush 5 s, no xDS pushes, probes every second).
``mixed`` is ``kubectl offwake demo`` without ``--scenario``: many things at once.
``connection-churn`` is ``accept-herd``'s control: the same new connection per request on
Envoy's default listeners (a socket per worker), where no herd may be reported.
``kubectl offwake demo --list-scenarios``, the scenario tests and the runbook read this
table; nothing else describes a scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Tuple

from .settings import AccessLog, CpuQuota, Load, LuaStall, MeshSettings, describe

#: What ``demo`` runs without ``--scenario``.
DEFAULT = "mixed"


@dataclass(frozen=True)
class Scenario:
    name: str
    #: One line: the condition, in words.
    summary: str
    #: Finding ids (warning or critical) the report should raise; none for ``healthy``.
    expected: Tuple[str, ...]
    settings: MeshSettings

    def sets_up(self) -> List[str]:
        """What the demo sets up, from the settings themselves: every knob for the
        baseline, else what differs from ``healthy``."""
        if self.settings == HEALTHY:
            return describe(self.settings)
        return describe(self.settings, HEALTHY)


HEALTHY = MeshSettings(
    load=Load(connections=1, delay_ms=50),
    probe_interval_s=1.0,
    agent_interval_s=1.0,
    agent_stats_every=15,
    xds_refresh_ms=10_000,
    xds_push=False,
    dns_refresh_ms=5_000,
    stats_flush_ms=5_000,
    hog_nice=None,
)

#: A new connection per request, one at a time: with a shared listener every connection
#: finds both workers waiting (two concurrent connections kept one worker busy while the
#: other accepted, and the herd did not show).
CHURN = Load(connections=1, delay_ms=5, new_connection=True)

SCENARIOS: Tuple[Scenario, ...] = (
    Scenario(
        "mixed", "Many things at once: the default demo",
        ("noisy-neighbour", "dns-storm", "xds-churn"),
        MeshSettings(),
    ),
    Scenario(
        "healthy", "Nothing wrong: a quiet sidecar",
        (),
        HEALTHY,
    ),
    Scenario(
        "cpu-throttled", "A CPU limit below the load: CFS throttling",
        ("cpu-throttling",),
        replace(HEALTHY, load=Load(connections=2, delay_ms=5),
                cpu_quota=CpuQuota(quota_us=2_000, period_us=100_000)),
    ),
    Scenario(
        "noisy-neighbour", "Another process takes Envoy's CPU",
        ("noisy-neighbour",),
        # nice -12 weighs about 5x Envoy: measured, its workers waited runnable for 12-17%
        # of their off-CPU time (nice -5 gave 5-14%, at times under the finding's 5%)
        replace(HEALTHY, load=Load(connections=2, delay_ms=10), hog_nice=-12),
    ),
    Scenario(
        "dns-storm", "A DNS cluster re-resolved many times a second",
        ("dns-storm",),
        replace(HEALTHY, dns_refresh_ms=20),
    ),
    Scenario(
        "xds-churn", "Configuration pushed many times a second",
        ("xds-churn",),
        replace(HEALTHY, xds_refresh_ms=100, xds_push=True),
    ),
    Scenario(
        "accept-herd", "One listening socket shared by every worker",
        ("accept-herd",),
        replace(HEALTHY, reuse_port=False, load=CHURN),
    ),
    Scenario(
        "connection-churn", "A new connection per request, on per-worker listeners",
        (),
        replace(HEALTHY, load=CHURN),
    ),
    Scenario(
        "slow-upstream", "The app is slow, not the sidecar",
        (),
        replace(HEALTHY, upstream_delay_ms=200, load=Load(connections=2, delay_ms=5)),
    ),
    Scenario(
        "event-loop-stall", "A worker blocked by its own work",
        ("event-loop-stall",),
        # 450 ms, every 3 s: Envoy's watchdog checks every 200 ms for a thread that has not
        # checked in for 200 ms, so a stall must last 400 ms for a check to surely fall in
        # it; a worker spinning 15% of the time is stalled, not hot (a 4 s trace holds one
        # spin, or two when it starts just after one: 23%, under the hot worker's 25%).
        replace(HEALTHY, load=Load(connections=2, delay_ms=80),
                lua_stall=LuaStall(every_s=3, spin_ms=450)),
    ),
    Scenario(
        "access-log-contention",
        "The access log flushed every millisecond: its flush thread woken hundreds of times "
        "a second",
        ("access-log-flush",),
        replace(HEALTHY, load=Load(connections=4, delay_ms=2, header_bytes=1024),
                access_log=AccessLog(flush_ms=1, loggers=8, log_headers=True)),
    ),
)

BY_NAME: Dict[str, Scenario] = {s.name: s for s in SCENARIOS}


def names() -> Tuple[str, ...]:
    return tuple(s.name for s in SCENARIOS)
