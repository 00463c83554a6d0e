"""Findings about Envoy's threads waking each other (findings/threads.py): cross-thread
posts, access-log flushing, workers waiting on the main thread."""

from __future__ import annotations

from tests.unit.findings_support import MAIN, ids, one
from tests.unit.test_aggregate import (
    APP,
    T_FUTEX,
    U_ACCESS_LOG,
    U_POST,
    W_EVENTFD,
    W_FUTEX,
    W_TCP,
    Mesh,
    waker,
)

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
