"""CPU shortage findings (findings/cpu.py): CFS throttling and a noisy neighbour."""

from __future__ import annotations

from tests.unit.findings_support import ids, one, workers_busy
from tests.unit.test_aggregate import (
    CRUNCHER,
    KUBELET,
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
