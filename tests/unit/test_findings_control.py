"""Control-plane findings (findings/control.py): DNS refresh storms and xDS churn."""

from __future__ import annotations

from typing import List

import pytest

from tests.unit.findings_support import MAIN, at_edge, ids, one
from tests.unit.test_aggregate import (
    COREDNS,
    PILOT,
    SWAPPER,
    U_POST,
    W_EVENTFD,
    W_UDP,
    W_UNIX,
    Mesh,
    waker,
)

# -- DNS -------------------------------------------------------------------------------------

def test_dns_storm() -> None:
    m = Mesh(duration_s=30)
    m.wake("envoy", waker(COREDNS), W_UDP, 1142, 10_000_000)
    f = one(m.report(), "dns-storm")
    assert f.evidence["per_second"] == pytest.approx(38.07, abs=0.01)
    assert f.evidence["waker"] == "kube-system/coredns-5d78c/coredns"
    assert "38.1 times a second" in f.text


@pytest.mark.parametrize("count,duration,counts", [
    (120, 30.0, True),  # 4 a second: under the threshold
    (1142, None, True),  # no duration: no rate
    (1142, 30.0, False),  # no counts (an import)
])
def test_dns_storm_near_miss(count: int, duration, counts: bool) -> None:
    m = Mesh(duration_s=duration, counts=counts)
    m.wake("envoy", waker(COREDNS), W_UDP, count, 10_000_000)
    assert "dns-storm" not in ids(m.report())


def test_dns_storm_only_for_the_main_thread() -> None:
    m = Mesh(duration_s=30)
    m.wake("wrk:worker_0", waker(COREDNS), W_UDP, 1142, 10_000_000)
    assert "dns-storm" not in ids(m.report())


# -- xDS -------------------------------------------------------------------------------------

def xds(m: Mesh, unix: int, workers: List[str], fanout: int) -> None:
    m.wake("envoy", waker(PILOT), W_UNIX, unix, 5_000_000)
    for comm in workers:
        m.wake(comm, MAIN, W_EVENTFD, fanout, 400_000, waker_user=U_POST)
    m.oncpu("wrk:worker_0", 100_000, 1_000)
    m.oncpu("wrk:worker_1", 100_000, 1_000)


def test_xds_churn() -> None:
    m = Mesh(duration_s=30)
    xds(m, 188, ["wrk:worker_0", "wrk:worker_1"], 96)
    f = one(m.report(), "xds-churn")
    assert f.evidence["unix_wakeups"] == 188 and f.evidence["workers_reached"] == 2
    assert f.evidence["eventfd_wakeups"] == 192
    assert f.text.startswith("app/productpage-v1/istio-proxy (pilot-agent) woke")


@pytest.mark.parametrize("unix,workers", [
    (15, ["wrk:worker_0", "wrk:worker_1"]),  # 0.5 pushes a second
    (188, ["wrk:worker_0"]),  # the main thread reached one of two workers
])
def test_xds_churn_near_miss(unix: int, workers: List[str]) -> None:
    m = Mesh(duration_s=30)
    xds(m, unix, workers, 96)
    assert "xds-churn" not in ids(m.report())


# -- what the rates need --------------------------------------------------------------------

def test_xds_churn_needs_the_trace_duration() -> None:
    m = Mesh(duration_s=None)
    xds(m, 188, ["wrk:worker_0", "wrk:worker_1"], 96)
    assert "xds-churn" not in ids(m.report())


def test_dns_storm_answers_delivered_in_interrupts_name_no_waker() -> None:
    """The idle task was on the CPU when the answers came in: it is no waker to name."""
    m = Mesh(duration_s=30)
    m.wake("envoy", waker(SWAPPER), W_UDP, 1142, 10_000_000)
    f = one(m.report(), "dns-storm")
    assert f.evidence["waker"] is None and "mostly from" not in f.text


# -- each threshold at its edge: the finding at the value, silence just under it --------------

def dns(count: int) -> Mesh:
    m = Mesh(duration_s=30)
    m.wake("envoy", waker(COREDNS), W_UDP, count, 10_000_000)
    return m


def xds_fanout(per_worker: List[int]) -> Mesh:
    m = Mesh(duration_s=30)
    m.wake("envoy", waker(PILOT), W_UNIX, 188, 5_000_000)
    for i, n in enumerate(per_worker):
        m.wake(f"wrk:worker_{i}", MAIN, W_EVENTFD, n, 400_000, waker_user=U_POST)
    return m


def xds_pushes(unix: int) -> Mesh:
    m = Mesh(duration_s=30)
    xds(m, unix, ["wrk:worker_0", "wrk:worker_1"], 96)
    return m


@pytest.mark.parametrize("make,fid,at,under", [
    (dns, "dns-storm", 150, 149),  # DNS_WAKES_PER_S: 5 a second over 30 s
    (xds_pushes, "xds-churn", 30, 29),  # XDS_UNIX_WAKES_PER_S: 1 a second
    (xds_fanout, "xds-churn", [5, 5], [5, 4]),  # XDS_FANOUT_MIN_WAKES: 10
], ids=["dns-rate", "xds-rate", "xds-fanout"])
def test_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)


# -- resting on Envoy's own counters ----------------------------------------------------------

def test_dns_storm_backed_by_envoys_resolutions() -> None:
    m = dns(1142)
    m.envoy_stats({"dns.cares.resolve_total": 1150, "cluster.upstream.update_attempt": 1150})
    f = one(m.report(), "dns-storm")
    assert f.evidence["resolutions"] == 1150 and f.evidence["basis"] == "envoy counters"
    assert "Envoy counted 1150 DNS resolutions (dns.*.resolve_total), 38.3 a second" in f.text


def test_dns_storm_from_cluster_refreshes_when_the_resolver_has_no_counter() -> None:
    m = dns(1142)
    m.envoy_stats({"cluster.upstream.update_attempt": 1150})
    assert one(m.report(), "dns-storm").evidence["counters"] == "cluster.*.update_attempt"


def test_no_dns_storm_when_envoy_resolved_seldom() -> None:
    """UDP wakes of main that Envoy's resolver does not account for are no DNS storm."""
    m = dns(1142)
    m.envoy_stats({"dns.cares.resolve_total": 6})
    assert "dns-storm" not in ids(m.report())


def test_dns_storm_without_the_admin_says_it_rests_on_wakeups() -> None:
    m = dns(1142)
    m.envoy_stats({}, read=False)
    f = one(m.report(), "dns-storm")
    assert f.evidence["basis"] == "wakeups" and "rests on the UDP wakeups alone" in f.text


def test_xds_churn_from_envoys_updates_needs_no_fanout() -> None:
    m = Mesh(duration_s=30)
    m.wake("envoy", waker(PILOT), W_UNIX, 40, 5_000_000)
    m.envoy_stats({"cluster_manager.cds.update_success": 180,
                   "listener_manager.lds.update_success": 12})
    f = one(m.report(), "xds-churn")
    assert f.evidence["updates"] == 192 and f.evidence["basis"] == "envoy counters"
    assert f.text.startswith("Envoy accepted 192 xDS updates (cds/lds/rds update_success), "
                             "6.4 a second; the trace saw 40 unix-socket wakeups")


def test_no_xds_churn_when_envoy_applied_no_updates() -> None:
    """pilot-agent polling the admin over a unix socket is no push, however often."""
    m = Mesh(duration_s=30)
    xds(m, 300, ["wrk:worker_0", "wrk:worker_1"], 96)
    m.envoy_stats({"cluster_manager.cds.update_success": 2})
    assert "xds-churn" not in ids(m.report())


def dns_backed(resolutions: int) -> Mesh:
    m = dns(1142)
    m.envoy_stats({"dns.cares.resolve_total": resolutions})
    return m


def xds_updates(updates: int) -> Mesh:
    m = Mesh(duration_s=30)
    m.wake("envoy", waker(PILOT), W_UNIX, 5, 5_000_000)
    m.envoy_stats({"cluster_manager.cds.update_success": updates})
    return m


@pytest.mark.parametrize("make,fid,at,under", [
    (dns_backed, "dns-storm", 150, 149),  # DNS_RESOLUTIONS_PER_S: 5 a second over 30 s
    (xds_updates, "xds-churn", 15, 14),  # XDS_UPDATES_PER_S: one every 2 s over 30 s
], ids=["dns-resolutions", "xds-updates"])
def test_counter_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)
