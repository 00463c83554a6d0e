"""CPU shortage findings (findings/cpu.py): CFS throttling and a noisy neighbour."""

from __future__ import annotations

import pytest

from tests.unit.findings_support import at_edge, ids, one, workers_busy
from tests.unit.test_aggregate import (
    APP,
    CRUNCHER,
    KSOFTIRQD,
    KUBELET,
    W_TCP,
    Mesh,
    waker,
)

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


def test_noisy_neighbour_names_the_preemptor_without_run_queue_holders() -> None:
    """A recording without the collector's queued records rests on preempted_by."""
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    m.throttled(nr_throttled=0)
    r = m.report()
    f = one(r, "noisy-neighbour")
    assert f.evidence["neighbour"] == "batch/cruncher-7d9/cruncher"
    assert f.evidence["basis"] == "preemptions"
    assert f.severity == "warning" and "no CFS throttling" in f.text
    assert "Other processes preempted them" in f.text
    assert "batch/cruncher-7d9/cruncher" in f.title
    assert "cpu-throttling" not in ids(r)


def woken_late(m: Mesh, runq_share: float, holders: dict) -> None:
    """Two workers, 10 s off-CPU, runq_share of it waiting to run after their wakes,
    shared among ``holders`` ({task or None: share of the wait})."""
    off = 10_000_000
    runq = int(off * runq_share)
    for comm in ("wrk:worker_0", "wrk:worker_1"):
        m.wake(comm, waker(APP), W_TCP, 500, off // 2, runq_us=runq // 2)
        for holder, share in holders.items():
            m.queued(comm, holder, 100, int(runq // 2 * share))


def test_noisy_neighbour_names_who_held_the_cpu_while_woken_workers_waited() -> None:
    """No preemption at all: the neighbour delayed the wakeups, and the holders say so."""
    m = Mesh()
    woken_late(m, 0.10, {waker(CRUNCHER): 0.7, Mesh.task("wrk:worker_1"): 0.2, None: 0.1})
    m.throttled(nr_throttled=0)
    f = one(m.report(), "noisy-neighbour")
    assert f.evidence["basis"] == "run-queue holders"
    assert f.evidence["neighbour"] == "batch/cruncher-7d9/cruncher"
    assert f.evidence["neighbour_us"] == 700_000 and f.evidence["own_us"] == 200_000
    assert "ran while they waited: batch/cruncher-7d9/cruncher for 700 ms (each wait" in f.text


def test_noisy_neighbour_near_miss_preempted_by_itself() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=Mesh.task("wrk:worker_2"))
    m.throttled(nr_throttled=0)
    assert "noisy-neighbour" not in ids(m.report())


def test_noisy_neighbour_near_miss_workers_waited_behind_each_other() -> None:
    """A worker spinning holds the CPU the other waits for: no neighbour, whatever a
    kernel thread took meanwhile."""
    m = Mesh()
    woken_late(m, 0.30, {Mesh.task("wrk:worker_1"): 0.8, waker(KSOFTIRQD): 0.1, None: 0.1})
    m.throttled(nr_throttled=0)
    assert "noisy-neighbour" not in ids(m.report())


def test_noisy_neighbour_near_miss_mostly_own_threads() -> None:
    """Workers preempting each other (and run-queue waits after wakes) are no neighbour."""
    m = Mesh()
    workers_busy(m, 0.20, by=Mesh.task("wrk:worker_1"))
    m.preempt("wrk:worker_0", 5, 40_000, by=waker(CRUNCHER))  # 2% of the wait
    m.throttled(nr_throttled=0)
    assert "noisy-neighbour" not in ids(m.report())


def test_noisy_neighbour_text_puts_the_top_neighbour_in_proportion() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    m.preempt("wrk:worker_0", 5, 100_000, by=waker(KUBELET))
    f = one(m.report(), "noisy-neighbour")
    assert "took the CPU from them for 1.00 s of the 1.10 s other processes held it" in f.text
    assert f.evidence["others_us"] == 1_100_000


def test_noisy_neighbour_without_counters_says_so() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    assert "no throttling counters" in one(m.report(), "noisy-neighbour").text


# -- severity, and whose threads count ------------------------------------------------------

def test_cfs_throttling_below_the_critical_share_is_a_warning() -> None:
    m = Mesh()
    workers_busy(m, 0.10, by=waker(CRUNCHER))
    m.throttled(nr_throttled=7, nr_periods=0)
    f = one(m.report(), "cpu-throttling")
    assert f.severity == "warning" and "10%" in f.text
    assert "throttled in 7 CFS periods." in f.text  # no period count, no total time


def test_noisy_neighbour_reads_only_the_workers_when_there_are_workers() -> None:
    """The workers waited on each other; the neighbour preempted only the main thread,
    whose wait is not in the workers' share: nobody is named."""
    m = Mesh()
    workers_busy(m, 0.10, by=Mesh.task("wrk:worker_2"))
    m.preempt("envoy", 50, 5_000_000, by=waker(CRUNCHER))
    m.throttled(nr_throttled=0)
    assert not {"cpu-throttling", "noisy-neighbour"} & set(ids(m.report()))


def test_noisy_neighbour_of_a_process_without_workers_speaks_of_traced_threads() -> None:
    m = Mesh()
    m.wake("envoy", waker(APP), W_TCP, 500, 9_000_000)
    m.preempt("envoy", 50, 1_000_000, by=waker(CRUNCHER))
    f = one(m.report(), "noisy-neighbour")
    assert f.text.startswith("The traced threads spent 10% of their off-CPU time")
    assert f.evidence["threads"] == "traced threads"


def test_noisy_neighbour_named_once_it_explains_a_quarter_of_the_wait() -> None:
    m = Mesh()
    workers_busy(m, 0.20, by=Mesh.task("wrk:worker_1"))
    m.preempt("wrk:worker_0", 5, 700_000, by=waker(CRUNCHER))  # 25.9% of the wait
    m.throttled(nr_throttled=0)
    f = one(m.report(), "noisy-neighbour")
    assert f.evidence["others_us"] == 700_000
    assert f.evidence["own_us"] == 2_000_000


# -- each threshold at its edge: the finding at the value, silence just under it --------------

def throttled_share(share: float) -> Mesh:
    m = Mesh()
    workers_busy(m, share, by=waker(CRUNCHER))
    m.throttled(nr_throttled=48)
    return m


def throttled_wait(runq_us: int) -> Mesh:
    """A nearly idle worker: 10% of its off-CPU time runnable, runq_us of it."""
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 10, runq_us * 9)
    m.preempt("wrk:worker_0", 1, runq_us)
    m.throttled(nr_throttled=5)
    return m


def neighbour(cruncher_us: int) -> Mesh:
    """2 s of the workers' wait is their own; the cruncher adds cruncher_us."""
    m = Mesh()
    workers_busy(m, 0.20, by=Mesh.task("wrk:worker_1"))
    m.preempt("wrk:worker_0", 5, cruncher_us, by=waker(CRUNCHER))
    m.throttled(nr_throttled=0)
    return m


def held(cruncher_share: float) -> Mesh:
    """1 s of run-queue wait after wakes; the cruncher held the CPU for that share of it."""
    m = Mesh()
    woken_late(m, 0.10, {waker(CRUNCHER): cruncher_share, None: 1 - cruncher_share})
    m.throttled(nr_throttled=0)
    return m


@pytest.mark.parametrize("make,fid,at,under", [
    (throttled_share, "cpu-throttling", 0.05, 0.049),  # RUNQ_SHARE_MIN
    (throttled_wait, "cpu-throttling", 10_000, 9_999),  # RUNQ_MIN_US
    (neighbour, "noisy-neighbour", 667_000, 666_000),  # NEIGHBOUR_MIN_SHARE: 25.01%, 24.99%
    (held, "noisy-neighbour", 0.25, 0.249),  # NEIGHBOUR_MIN_SHARE, of the holders
], ids=["share", "wait", "neighbour-share", "holder-share"])
def test_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)


def test_critical_from_a_fifth_of_the_off_cpu_time() -> None:  # RUNQ_SHARE_CRITICAL
    assert one(throttled_share(0.20).report(), "cpu-throttling").severity == "critical"
    assert one(throttled_share(0.19).report(), "cpu-throttling").severity == "warning"


def test_kernel_threads_are_no_neighbour_to_move() -> None:
    """ksoftirqd doing the node's network work held the CPU: counted apart, not named."""
    m = Mesh()
    woken_late(m, 0.10, {waker(KSOFTIRQD): 0.6, waker(CRUNCHER): 0.3, None: 0.1})
    m.throttled(nr_throttled=0)
    f = one(m.report(), "noisy-neighbour")
    assert f.evidence["neighbour"] == "batch/cruncher-7d9/cruncher"
    assert f.evidence["kernel_us"] == 600_000 and f.evidence["others_us"] == 300_000
    m = Mesh()
    woken_late(m, 0.10, {waker(KSOFTIRQD): 0.9, None: 0.1})
    m.throttled(nr_throttled=0)
    assert "noisy-neighbour" not in ids(m.report())
