"""On-CPU findings (findings/oncpu.py): a hot worker and event-loop stalls."""

from __future__ import annotations

import pytest

from kubectl_offwake.analysis.model import OnCpu, Task
from tests.unit.findings_support import at_edge, ids, one
from tests.unit.test_aggregate import (
    Mesh,
)

# -- on-CPU: hot worker, stalls ---------------------------------------------------------------

def test_hot_worker() -> None:
    m = Mesh(duration_s=30)
    m.oncpu("wrk:worker_0", 21_600_000, 9_000)
    m.oncpu("wrk:worker_1", 2_000_000, 9_000)
    m.oncpu("wrk:worker_2", 2_700_000, 9_000)
    f = one(m.report(), "hot-worker")
    assert f.evidence["worker"] == "wrk:worker_0" and f.evidence["busy"] == 0.72
    assert "72% of the time" in f.text


@pytest.mark.parametrize("hot,duration", [(5_000_000, 30.0), (6_000_000, 30.0),
                                          (150_000, None)])
def test_hot_worker_near_miss(hot: int, duration) -> None:
    m = Mesh(duration_s=duration)
    m.oncpu("wrk:worker_0", hot, 9_000)
    m.oncpu("wrk:worker_1", 2_000_000 if duration else 40_000, 9_000)
    m.oncpu("wrk:worker_2", 2_000_000 if duration else 40_000, 9_000)
    assert "hot-worker" not in ids(m.report())


@pytest.mark.parametrize("max_us,severity", [(180_000, "warning"), (250_000, "critical")])
def test_event_loop_stall(max_us: int, severity: str) -> None:
    m = Mesh()
    m.oncpu("wrk:worker_1", 1_000_000, max_us)
    m.oncpu("wrk:worker_0", 1_000_000, 60_000)
    m.oncpu("AccessLogFlush", 1_000_000, 900_000)  # not an event loop
    f = one(m.report(), "event-loop-stall")
    assert f.severity == severity and f.evidence["thread"] == "wrk:worker_1"
    assert f.evidence["threads"] == {"wrk:worker_1": max_us, "wrk:worker_0": 60_000}


def test_event_loop_stall_near_miss() -> None:
    m = Mesh()
    m.oncpu("wrk:worker_1", 1_000_000, 40_000)
    m.oncpu("dog:main", 1_000_000, 900_000)
    assert "event-loop-stall" not in ids(m.report())


# -- without a duration, idle neighbours, threads that are not Envoy's ------------------------

def test_hot_worker_without_a_duration_needs_its_on_cpu_time() -> None:
    m = Mesh(duration_s=None)
    m.oncpu("wrk:worker_0", 300_000, 9_000)
    m.oncpu("wrk:worker_1", 40_000, 9_000)
    m.oncpu("wrk:worker_2", 40_000, 9_000)
    f = one(m.report(), "hot-worker")
    assert "was on the CPU for 300 ms in all, 8× the median" in f.text
    assert f.evidence["busy"] is None


def test_hot_worker_when_the_others_never_ran() -> None:
    m = Mesh(duration_s=30)
    m.oncpu("wrk:worker_0", 21_600_000, 9_000)
    m.oncpu("wrk:worker_1", 0, 0, count=0)
    f = one(m.report(), "hot-worker")
    assert "while the other workers barely ran (0 µs)" in f.text


def test_event_loop_stall_counts_the_other_stalled_threads() -> None:
    m = Mesh()
    m.oncpu("wrk:worker_0", 1_000_000, 60_000)
    m.oncpu("wrk:worker_1", 1_000_000, 70_000)
    m.oncpu("envoy", 1_000_000, 90_000)
    f = one(m.report(), "event-loop-stall")
    assert f.evidence["thread"] == "envoy" and f.severity == "warning"
    assert "(and 2 more threads)" in f.text


def test_event_loop_stall_in_a_process_that_is_not_envoy() -> None:
    """A traced thread without an Envoy role is taken to run an event loop too."""
    m = Mesh()
    m.rec.oncpu.append(OnCpu(Task("python3", 777, 777), 10, 1_000_000, 80_000))
    f = one(m.report(), "event-loop-stall")
    assert f.evidence["thread"] == "python3" and f.evidence["tid"] == 777


# -- each threshold at its edge: the finding at the value, silence just under it --------------

def workers_on_cpu(hot_us: int, others_us: int = 3_000_000, duration=30.0) -> Mesh:
    m = Mesh(duration_s=duration)
    m.oncpu("wrk:worker_0", hot_us, 9_000)
    m.oncpu("wrk:worker_1", others_us, 9_000)
    m.oncpu("wrk:worker_2", others_us, 9_000)
    return m


def ratio(hot_us: int) -> Mesh:  # 3x the median, on the CPU 30% of the time
    return workers_on_cpu(hot_us)


def busy(hot_us: int) -> Mesh:  # 7.5x the median, on the CPU 25% of the time
    return workers_on_cpu(hot_us, 1_000_000)


def no_duration(hot_us: int) -> Mesh:
    return workers_on_cpu(hot_us, 40_000, duration=None)


def stall(max_us: int) -> Mesh:
    m = Mesh()
    m.oncpu("wrk:worker_0", 1_000_000, max_us)
    return m


@pytest.mark.parametrize("make,fid,at,under", [
    (ratio, "hot-worker", 9_000_000, 8_999_999),  # HOT_RATIO
    (busy, "hot-worker", 7_500_000, 7_499_999),  # HOT_MIN_BUSY
    (no_duration, "hot-worker", 200_000, 199_999),  # HOT_MIN_ONCPU_US
    (stall, "event-loop-stall", 50_000, 49_999),  # STALL_US
], ids=["ratio", "busy", "no-duration", "stall"])
def test_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)


def test_stall_critical_at_the_watchdog_miss() -> None:  # STALL_CRITICAL_US
    assert one(stall(200_000).report(), "event-loop-stall").severity == "critical"
    assert one(stall(199_999).report(), "event-loop-stall").severity == "warning"


# -- busy periods and Envoy's watchdog --------------------------------------------------------

def test_stall_split_by_preemptions_shows_as_one_busy_period() -> None:
    """A 250 ms spin among other runnable threads: no run over 9 ms, one busy period."""
    m = Mesh()
    m.oncpu("wrk:worker_1", 1_000_000, 9_300, busy_us=251_000)
    m.oncpu("wrk:worker_0", 1_000_000, 9_000, busy_us=12_000)
    f = one(m.report(), "event-loop-stall")
    assert f.severity == "critical" and f.evidence["basis"] == "busy period"
    assert f.evidence["stall_us"] == 251_000 and f.evidence["max_run_us"] == 9_300
    assert "used 251 ms of CPU without once waiting for an event (its longest single run " \
        "was 9.30 ms: preemptions split the rest)" in f.text


def test_stall_confirmed_by_the_watchdog_is_critical() -> None:
    m = Mesh()
    m.oncpu("wrk:worker_1", 1_000_000, 9_300, busy_us=120_000)
    m.envoy_stats({"server.worker_1.watchdog_miss": 3, "workers.watchdog_miss": 3})
    f = one(m.report(), "event-loop-stall")
    assert f.severity == "critical" and f.evidence["watchdog_misses"] == 3
    assert "Envoy's watchdog counted 3 misses of its 200 ms deadline" in f.text


def test_stall_the_watchdog_did_not_see_stays_a_warning_and_says_so() -> None:
    m = Mesh()
    m.oncpu("wrk:worker_1", 1_000_000, 9_300, busy_us=120_000)
    m.envoy_stats({"server.worker_0.watchdog_miss": 2})  # another thread's misses
    f = one(m.report(), "event-loop-stall")
    assert f.severity == "warning" and f.evidence["watchdog_misses"] == 0
    assert "counted no miss" in f.text


def test_a_saturated_worker_is_busy_not_stalled() -> None:
    """On the CPU 95% of the trace, it seldom sleeps because events keep coming."""
    m = Mesh(duration_s=30)
    m.oncpu("wrk:worker_0", 28_500_000, 3_000, busy_us=2_000_000)
    assert "event-loop-stall" not in ids(m.report())
    m.envoy_stats({"server.worker_0.watchdog_mega_miss": 1})  # unless the watchdog says so
    assert one(m.report(), "event-loop-stall").severity == "critical"


def saturated(total_us: int) -> Mesh:
    m = Mesh(duration_s=10)
    m.oncpu("wrk:worker_0", total_us, 3_000, busy_us=500_000)
    return m


def test_saturation_threshold_at_its_edge() -> None:  # SATURATED_SHARE: 90% of 10 s
    at_edge(saturated, "event-loop-stall", 8_999_999, 9_000_000)


def test_hot_worker_says_which_worker_accepted_the_new_connections() -> None:
    m = Mesh(duration_s=30)
    m.oncpu("wrk:worker_0", 21_600_000, 9_000)
    m.oncpu("wrk:worker_1", 2_000_000, 9_000)
    m.envoy_stats({"listener.0.0.0.0_15006.worker_0.downstream_cx_total": 3,
                   "listener.0.0.0.0_15006.worker_1.downstream_cx_total": 2})
    f = one(m.report(), "hot-worker")
    assert f.evidence["connections_by_worker"] == {"wrk:worker_0": 3, "wrk:worker_1": 2}
    assert "it accepted 3 of the 5 connections opened meanwhile" in f.text
