"""Connection findings (findings/connections.py): the accept thundering herd."""

from __future__ import annotations

import pytest

from tests.unit.findings_support import at_edge, ids, one
from tests.unit.test_aggregate import (
    KUBELET,
    W_ACCEPT,
    Mesh,
    waker,
)

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


def test_accept_herd_near_miss_uneven_above_the_minimum() -> None:
    """Every worker woke often enough, but 60-100 is not the near-equal spread of a herd."""
    m = Mesh()
    for i, n in enumerate((100, 70, 60)):
        m.wake(f"wrk:worker_{i}", waker(KUBELET), W_ACCEPT, n, n * 1000)
    assert "accept-herd" not in ids(m.report())


# -- each threshold at its edge: the finding at the value, silence just under it --------------

def accepts(*counts: int) -> Mesh:
    m = Mesh()
    for i, n in enumerate(counts):
        m.wake(f"wrk:worker_{i}", waker(KUBELET), W_ACCEPT, n, n * 1000)
    return m


@pytest.mark.parametrize("at,under", [
    ((10, 10), (9, 9)),  # HERD_MIN_WAKES_PER_WORKER
    ((100, 80), (100, 79)),  # HERD_BALANCE
    ((50, 50), (50,)),  # HERD_MIN_WORKERS
], ids=["wakes", "balance", "workers"])
def test_thresholds_at_their_edge(at, under) -> None:
    at_edge(lambda counts: accepts(*counts), "accept-herd", at, under)
