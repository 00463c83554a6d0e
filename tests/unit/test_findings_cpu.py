"""CPU shortage findings (findings/cpu.py): CFS throttling and a noisy neighbour."""

from __future__ import annotations

import pytest

from tests.unit.findings_support import at_edge, ids, one, workers_busy
from tests.unit.test_aggregate import (
    APP,
    CRUNCHER,
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


def test_noisy_neighbour_named_once_it_explains_a_twentieth_of_the_wait() -> None:
    m = Mesh()
    workers_busy(m, 0.20, by=Mesh.task("wrk:worker_1"))
    m.preempt("wrk:worker_0", 5, 120_000, by=waker(CRUNCHER))  # 5.7% of the wait
    m.throttled(nr_throttled=0)
    f = one(m.report(), "noisy-neighbour")
    assert f.evidence["preempted_by_others_us"] == 120_000
    assert f.evidence["preempted_by_own_us"] == 2_000_000


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


@pytest.mark.parametrize("make,fid,at,under", [
    (throttled_share, "cpu-throttling", 0.05, 0.049),  # RUNQ_SHARE_MIN
    (throttled_wait, "cpu-throttling", 10_000, 9_999),  # RUNQ_MIN_US
    (neighbour, "noisy-neighbour", 106_000, 100_000),  # NEIGHBOUR_MIN_SHARE: 5.03%, 4.76%
], ids=["share", "wait", "neighbour-share"])
def test_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)


def test_critical_from_a_fifth_of_the_off_cpu_time() -> None:  # RUNQ_SHARE_CRITICAL
    assert one(throttled_share(0.20).report(), "cpu-throttling").severity == "critical"
    assert one(throttled_share(0.19).report(), "cpu-throttling").severity == "warning"
