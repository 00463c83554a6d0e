"""On-CPU findings (findings/oncpu.py): a hot worker and event-loop stalls."""

from __future__ import annotations

import pytest

from tests.unit.findings_support import ids, one
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
