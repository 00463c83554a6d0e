"""Findings: each one appears for a crafted recording with its signature, and stays silent
for a near miss (just under a threshold, or a piece of its evidence missing)."""

from __future__ import annotations

from typing import List

import pytest

from kubectl_offwake.analysis import findings as F
from kubectl_offwake.analysis.model import Pending, Task
from kubectl_offwake.analysis.report import Finding, Report
from tests.unit.test_aggregate import (
    APP,
    COREDNS,
    CRUNCHER,
    KUBELET,
    PILOT,
    SWAPPER,
    T_FUTEX,
    T_PREEMPT,
    U_ACCESS_LOG,
    U_POST,
    W_ACCEPT,
    W_EVENTFD,
    W_FUTEX,
    W_TCP,
    W_TCP_IRQ,
    W_TIMER,
    W_UDP,
    W_UNIX,
    Mesh,
    waker,
)

T_EPOLL_IDLE = ("__schedule", "schedule", "schedule_hrtimeout_range_clock", "do_epoll_wait",
                "__x64_sys_epoll_wait", "do_syscall_64")
MAIN = Mesh.task("envoy")


def ids(report: Report) -> List[str]:
    return [f.id for f in report.findings]


def one(report: Report, fid: str) -> Finding:
    found = [f for f in report.findings if f.id == fid]
    assert len(found) == 1, ids(report)
    return found[0]


def workers_busy(m: Mesh, runq_share: float, by=None) -> None:
    """Two workers, 10 s off-CPU in all, runq_share of it runnable (preempted)."""
    off = 10_000_000
    runq = int(off * runq_share)
    for comm in ("wrk:worker_0", "wrk:worker_1"):
        m.wake(comm, waker(APP), W_TCP, 500, off // 2 - runq // 2)
        m.preempt(comm, 50, runq // 2, by=by)


# -- CPU shortage --------------------------------------------------------------------------

def test_cfs_throttling() -> None:
    m = Mesh()
    workers_busy(m, 0.25, by=waker(CRUNCHER))
    m.throttled(nr_throttled=48, throttled_usec=2_300_000, nr_periods=300)
    r = m.report()
    f = one(r, "cpu-throttling")
    assert f.severity == "critical"
    assert f.evidence["nr_throttled"] == 48 and f.evidence["runnable_share"] == 0.25
    assert "throttled in 48 of 300 CFS periods" in f.text and "25%" in f.text
    assert "noisy-neighbour" not in ids(r)


def test_throttling_near_miss_small_runnable_share() -> None:
    m = Mesh()
    workers_busy(m, 0.03, by=waker(CRUNCHER))
    m.throttled(nr_throttled=48)
    assert not {"cpu-throttling", "noisy-neighbour"} & set(ids(m.report()))


def test_noisy_neighbour_names_the_preemptor() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    m.throttled(nr_throttled=0)
    r = m.report()
    f = one(r, "noisy-neighbour")
    assert f.evidence["preemptor"] == "batch/cruncher-7d9/cruncher"
    assert f.severity == "warning" and "no CFS throttling" in f.text
    assert "batch/cruncher-7d9/cruncher" in f.title
    assert "cpu-throttling" not in ids(r)


def test_noisy_neighbour_near_miss_preempted_by_itself() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=Mesh.task("wrk:worker_2"))
    m.throttled(nr_throttled=0)
    assert "noisy-neighbour" not in ids(m.report())


def test_noisy_neighbour_near_miss_mostly_own_threads() -> None:
    """Workers preempting each other (and run-queue waits after wakes) are no neighbour."""
    m = Mesh()
    workers_busy(m, 0.20, by=Mesh.task("wrk:worker_1"))
    m.preempt("wrk:worker_0", 5, 40_000, by=waker(CRUNCHER))  # 2% of the wait
    m.throttled(nr_throttled=0)
    assert "noisy-neighbour" not in ids(m.report())


def test_noisy_neighbour_text_puts_the_top_preemptor_in_proportion() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    m.preempt("wrk:worker_0", 5, 100_000, by=waker(KUBELET))
    f = one(m.report(), "noisy-neighbour")
    assert "took the CPU from them for 1.00 s of the 1.10 s other processes took" in f.text
    assert f.evidence["preempted_by_others_us"] == 1_100_000


def test_noisy_neighbour_without_counters_says_so() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    assert "no throttling counters" in one(m.report(), "noisy-neighbour").text


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


# -- cross-thread posts -----------------------------------------------------------------------

def test_cross_thread_posts_dominate_a_worker() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 300, 3_000_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 1_000_000)
    f = one(m.report(), "cross-thread-posts")
    assert f.evidence["share"] == 0.75 and f.evidence["from"] == ["envoy"]
    assert "75% of wrk:worker_0's wakeups" in f.text


def test_cross_thread_posts_without_user_frames_count_same_process_eventfd() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 300, 3_000_000)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 1_000_000)
    assert "cross-thread-posts" in ids(m.report())


def test_cross_thread_posts_near_miss() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 40, 3_000_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 60, 1_000_000)
    assert "cross-thread-posts" not in ids(m.report())


# -- one waker behind most wakeups -----------------------------------------------------------

def test_dominant_waker() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 600, 6_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 300, 1_000_000)
    m.wake("envoy", waker(SWAPPER), W_TIMER, 100, 3_000_000)
    f = one(m.report(), "dominant-waker")
    assert f.evidence["waker"] == "app/productpage-v1/productpage"
    assert f.evidence["share"] == 0.6 and "60% of all wakeups (600 of 1000)" in f.text


def test_dominant_waker_near_miss_and_bystanders_do_not_count() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 400, 6_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 300, 1_000_000)
    m.wake("wrk:worker_1", waker(CRUNCHER), W_TCP_IRQ, 300, 1_000_000)  # a bystander
    assert "dominant-waker" not in ids(m.report())
    m = Mesh()
    m.wake("wrk:worker_0", waker(CRUNCHER), W_TCP_IRQ, 900, 6_000_000)  # all bystander
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 100, 1_000_000)
    assert "dominant-waker" not in ids(m.report())


# -- accept herd -------------------------------------------------------------------------------

def test_accept_herd() -> None:
    m = Mesh()
    for comm, n in (("wrk:worker_0", 100), ("wrk:worker_1", 98), ("wrk:worker_2", 97)):
        m.wake(comm, waker(KUBELET), W_ACCEPT, n, n * 1000)
    f = one(m.report(), "accept-herd")
    assert f.evidence["balance"] == 0.97
    assert f.evidence["workers"] == ["wrk:worker_0", "wrk:worker_1", "wrk:worker_2"]


@pytest.mark.parametrize("counts", [(100, 40, 20), (100,), (5, 5)])
def test_accept_herd_near_miss(counts) -> None:
    m = Mesh()
    for i, n in enumerate(counts):
        m.wake(f"wrk:worker_{i}", waker(KUBELET), W_ACCEPT, n, n * 1000)
    assert "accept-herd" not in ids(m.report())


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


# -- still off the CPU at the end -------------------------------------------------------------

def test_still_off_cpu_on_a_lock() -> None:
    m = Mesh()
    m.pending("wrk:worker_1", 12_300_000, T_FUTEX)
    f = one(m.report(), "still-off-cpu")
    assert "wrk:worker_1" in f.text and "futex_wait_queue" in f.text and "12.3 s" in f.text


def test_still_off_cpu_runnable() -> None:
    m = Mesh()
    m.pending("wrk:worker_0", 150_000, T_PREEMPT, preempted=True)
    assert "runnable, waiting for a CPU" in one(m.report(), "still-off-cpu").text


def test_still_off_cpu_near_misses() -> None:
    m = Mesh()
    m.pending("wrk:worker_0", 20_000_000, T_EPOLL_IDLE)  # idle in its event loop
    m.pending("AccessLogFlush", 5_000_000, T_FUTEX)  # idles on a condition variable
    m.rec.processes[100].threads[107] = "GrpcGoogClient"
    m.rec.pending.append(Pending(Task("GrpcGoogClient", 100, 107), 5_000_000,
                                 m.stack(T_FUTEX)))  # an Envoy helper thread, idle
    m.pending("wrk:worker_1", 300_000, T_FUTEX)  # not long
    m.pending("wrk:worker_2", 50_000, T_PREEMPT, preempted=True)
    assert "still-off-cpu" not in ids(m.report())


# -- losses -------------------------------------------------------------------------------------

def test_losses_name_the_flag() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1000, 1_000_000)
    m.rec.lost.update({"stack_eexist": 37, "stack_enomem": 0, "map_full": 20, "agg_full": 20,
                       "start_full": 0, "oncpu_full": 0})
    f = one(m.report(), "losses")
    assert f.evidence["flags"] == ["--agg-size", "--stack-storage-size"]
    assert f.evidence["lost"] == {"stack_eexist": 37, "agg_full": 20}
    assert f.severity == "warning"  # 57 of 1000
    assert "Raise --agg-size and --stack-storage-size" in f.text


def test_losses_near_miss_all_zero() -> None:
    m = Mesh()
    m.rec.lost.update({"stack_eexist": 0, "stack_enomem": 0, "map_full": 0})
    assert "losses" not in ids(m.report())


# -- access log, main-thread locks ------------------------------------------------------------

def test_access_log_flush() -> None:
    m = Mesh(duration_s=30)
    m.wake("AccessLogFlush", Mesh.task("wrk:worker_0"), W_FUTEX, 308, 9_000_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    f = one(m.report(), "access-log-flush")
    assert f.evidence["flush_wakeups"] == 308 and "10.3 times a second" in f.text


def test_access_log_workers_waiting_on_the_log_lock() -> None:
    m = Mesh(duration_s=30)
    m.wake("wrk:worker_1", Mesh.task("AccessLogFlush"), W_FUTEX, 20, 50_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    assert "waited 50.0 ms on the access-log lock" in one(m.report(), "access-log-flush").text


def test_access_log_near_miss() -> None:
    m = Mesh(duration_s=30)
    m.wake("AccessLogFlush", Mesh.task("wrk:worker_0"), W_FUTEX, 60, 9_000_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    assert "access-log-flush" not in ids(m.report())


def test_main_thread_lock() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_FUTEX, 50, 40_000, target_kernel=T_FUTEX)
    m.wake("wrk:worker_1", MAIN, W_FUTEX, 50, 30_000, target_kernel=T_FUTEX)
    f = one(m.report(), "main-thread-lock")
    assert f.evidence["blocked_us"] == 70_000 and f.evidence["workers"] == [
        "wrk:worker_0", "wrk:worker_1"]


def test_main_thread_lock_near_miss() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_FUTEX, 50, 5_000, target_kernel=T_FUTEX)
    assert "main-thread-lock" not in ids(m.report())


# -- general ---------------------------------------------------------------------------------

def test_quiet_recording_has_no_findings() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 20_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 100, 20_000_000)
    m.wake("envoy", waker(SWAPPER), W_TIMER, 150, 29_000_000)
    m.oncpu("wrk:worker_0", 300_000, 2_000)
    m.oncpu("wrk:worker_1", 280_000, 2_000)
    assert m.report().findings == []


def test_findings_sorted_by_severity_and_serialisable() -> None:
    import json

    m = Mesh(duration_s=30)
    workers_busy(m, 0.25, by=waker(CRUNCHER))
    m.throttled(nr_throttled=48)
    m.wake("envoy", waker(COREDNS), W_UDP, 1142, 10_000_000)
    m.rec.lost["stack_eexist"] = 1
    r = m.report()
    order = {"critical": 0, "warning": 1, "info": 2}
    assert [order[f.severity] for f in r.findings] == sorted(order[f.severity]
                                                             for f in r.findings)
    assert len(r.findings) >= 3
    for f in r.findings:
        json.dumps(f.evidence)
        assert f.text.endswith(".") and "\n" not in f.text


def test_thresholds_are_named_constants() -> None:
    assert 0 < F.RUNQ_SHARE_MIN < F.RUNQ_SHARE_CRITICAL < 1
    assert F.STALL_US < F.STALL_CRITICAL_US


def test_findings_name_the_pod_when_several_are_traced() -> None:
    from kubectl_offwake.analysis.model import ProcessInfo, Task

    m = Mesh(duration_s=30)
    m.rec.processes[500] = ProcessInfo(500, "envoy", pod="app/reviews-v2", container="istio-proxy")
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 1_000_000)
    other_main = Task("envoy", 500, 500)
    m.rec.edges.append(m.rec.edges[0].__class__(
        target=other_main, target_stack=m.stack(T_EPOLL_IDLE), waker=waker(COREDNS),
        waker_stack=m.stack(W_UDP), total_us=5_000_000, count=900, max_us=1, blocked_us=1,
        runq_us=0))
    f = one(m.report(), "dns-storm")
    assert " in app/reviews-v2/istio-proxy " in f.text


def test_throttling_counters_belong_to_their_pod() -> None:
    from kubectl_offwake.analysis.model import Throttling

    m = Mesh()
    workers_busy(m, 0.25, by=waker(CRUNCHER))
    m.rec.throttling.append(Throttling(500, "/other", {"nr_throttled": 0}, {"nr_throttled": 99}))
    m.throttled(nr_throttled=0)
    r = m.report()
    assert "cpu-throttling" not in ids(r)
    assert one(r, "noisy-neighbour").evidence["nr_throttled"] == 0


def test_imports_without_pids_or_counts_still_get_time_based_findings() -> None:
    """BCC folded output: comms only, no counts. Envoy's threads count as one process."""
    from kubectl_offwake.analysis.model import Edge, Recording, Task

    rec = Recording(source={"duration_s": 10})
    ts = rec.stacks.intern(T_EPOLL_IDLE, len(T_EPOLL_IDLE))
    worker, main, app = Task("wrk:worker_0", None, 11), Task("envoy", None, 10), \
        Task("gunicorn", None, 20)
    rec.edges.append(Edge(worker, ts, main, rec.stacks.intern(W_EVENTFD + U_POST,
                                                              len(W_EVENTFD)), 800_000))
    rec.edges.append(Edge(worker, ts, app, rec.stacks.intern(W_TCP, len(W_TCP)), 200_000))
    rec.edges.append(Edge(main, ts, app, rec.stacks.intern(W_UNIX, len(W_UNIX)), 200_000))
    from kubectl_offwake.analysis import analyze

    r = analyze(rec)
    f = one(r, "cross-thread-posts")
    assert f.evidence["basis"] == "off-CPU time" and " in " not in f.text.split("(")[0]
    assert "800 ms of 1.00 s off-CPU" in f.text
    assert not {"dns-storm", "xds-churn", "dominant-waker"} & set(ids(r))
