"""Report-wide findings (findings/health.py): threads still off the CPU at the end, a
dominant waker, lost data."""

from __future__ import annotations

from kubectl_offwake.analysis.model import Pending, Task
from tests.unit.findings_support import T_EPOLL_IDLE, ids, one
from tests.unit.test_aggregate import (
    APP,
    CRUNCHER,
    KUBELET,
    SWAPPER,
    T_FUTEX,
    T_PREEMPT,
    W_TCP,
    W_TCP_IRQ,
    W_TIMER,
    Mesh,
    waker,
)

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
