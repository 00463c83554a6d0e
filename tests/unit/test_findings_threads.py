"""Findings about Envoy's threads waking each other (findings/threads.py): cross-thread
posts, access-log flushing, workers waiting on the main thread."""

from __future__ import annotations

import pytest

from tests.unit.findings_support import MAIN, at_edge, ids, one
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
    assert f.severity == "info"


def test_access_log_flushing_a_hundred_times_a_second_is_a_warning() -> None:
    m = Mesh(duration_s=5)
    m.wake("AccessLogFlush", MAIN, W_FUTEX, 1500, 4_000_000, target_kernel=T_FUTEX)
    m.wake("AccessLogFlush", Mesh.task("wrk:worker_0"), W_FUTEX, 100, 400_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    m.envoy_stats({"filesystem.flushed_by_timer": 1237}, window_s=5.1)
    f = one(m.report(), "access-log-flush")
    assert f.severity == "warning" and f.evidence["timer_flushes"] == 1237
    assert ("woken 320.0 times a second (1600 futex wakeups, 1500 by the main thread's flush "
            "timer, 100 by workers filling a log buffer)") in f.text
    assert "Envoy counted 1237 flushes by its flush timer" in f.text


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
    m.wake("wrk:worker_0", MAIN, W_FUTEX, 50, 400_000, target_kernel=T_FUTEX)
    m.wake("wrk:worker_1", MAIN, W_FUTEX, 50, 300_000, target_kernel=T_FUTEX)
    f = one(m.report(), "main-thread-lock")
    assert f.evidence["blocked_us"] == 700_000 and f.evidence["workers"] == [
        "wrk:worker_0", "wrk:worker_1"]


def test_main_thread_lock_near_miss() -> None:
    """11 ms in 5 s (the mixed demo: a few waits made long by the hog) is no finding."""
    m = Mesh(duration_s=5)
    m.wake("wrk:worker_0", MAIN, W_FUTEX, 13, 11_100, target_kernel=T_FUTEX)
    assert "main-thread-lock" not in ids(m.report())


# -- several workers, no counts, both access-log signs -----------------------------------------

def test_cross_thread_posts_name_the_worst_worker_and_count_the_others() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 300, 3_000_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 1_000_000)
    m.wake("wrk:worker_1", MAIN, W_EVENTFD, 90, 900_000, waker_user=U_POST)
    m.wake("wrk:worker_1", waker(APP), W_TCP, 10, 100_000)
    m.wake("wrk:worker_2", waker(APP), W_TCP, 400, 4_000_000)  # no posts at all
    f = one(m.report(), "cross-thread-posts")
    assert f.evidence["worker"] == "wrk:worker_1" and f.evidence["share"] == 0.9
    assert [w["comm"] for w in f.evidence["workers"]] == ["wrk:worker_1", "wrk:worker_0"]
    assert "(and 1 more worker)" in f.text


def test_cross_thread_posts_without_counts_need_ten_ms_of_posts() -> None:
    m = Mesh(counts=False)
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 300, 9_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 1_000)
    assert "cross-thread-posts" not in ids(m.report())
    m = Mesh(counts=False)
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 300, 30_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 10_000)
    f = one(m.report(), "cross-thread-posts")
    assert f.evidence["basis"] == "off-CPU time" and "30.0 ms of 40.0 ms off-CPU" in f.text


def test_access_log_flush_says_both_when_both_show() -> None:
    m = Mesh(duration_s=30)
    m.wake("AccessLogFlush", Mesh.task("wrk:worker_0"), W_FUTEX, 308, 9_000_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    m.wake("wrk:worker_1", Mesh.task("AccessLogFlush"), W_FUTEX, 20, 50_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    f = one(m.report(), "access-log-flush")
    assert ("woken 10.3 times a second (308 futex wakeups, 308 by workers filling a log "
            "buffer); workers waited 50.0 ms") in f.text
    assert f.severity == "info" and f.evidence["worker_wait_us"] == 50_000


def test_main_thread_lock_counts_only_what_the_main_thread_released() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", Mesh.task("wrk:worker_1"), W_FUTEX, 50, 40_000,
           target_kernel=T_FUTEX)
    assert "main-thread-lock" not in ids(m.report())


def test_cross_thread_posts_near_miss_too_few_posts() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 19, 3_000_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1, 1_000_000)
    assert "cross-thread-posts" not in ids(m.report())
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 1, 10_000, waker_user=U_POST)  # the 20th post
    assert "cross-thread-posts" in ids(m.report())


# -- each threshold at its edge: the finding at the value, silence just under it --------------

def post_share(tcp: int) -> Mesh:  # 50 posts and `tcp` wakes by traffic
    m = Mesh()
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 50, 500_000, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, tcp, 500_000)
    return m


def post_time(posts_us: int) -> Mesh:  # no counts: posts ended posts_us of 15 ms
    m = Mesh(counts=False)
    m.wake("wrk:worker_0", MAIN, W_EVENTFD, 1, posts_us, waker_user=U_POST)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1, 15_000 - posts_us)
    return m


def main_lock(blocked_us: int, duration=30.0) -> Mesh:
    m = Mesh(duration_s=duration)
    m.wake("wrk:worker_0", MAIN, W_FUTEX, 50, blocked_us, target_kernel=T_FUTEX)
    return m


def flush_rate(count: int) -> Mesh:
    m = Mesh(duration_s=30)
    m.wake("AccessLogFlush", Mesh.task("wrk:worker_0"), W_FUTEX, count, 9_000_000,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    return m


def log_lock(waited_us: int) -> Mesh:
    m = Mesh(duration_s=30)
    m.wake("wrk:worker_1", Mesh.task("AccessLogFlush"), W_FUTEX, 20, waited_us,
           waker_user=U_ACCESS_LOG, target_kernel=T_FUTEX)
    return m


@pytest.mark.parametrize("make,fid,at,under", [
    (post_share, "cross-thread-posts", 50, 51),  # POST_SHARE_MIN: half of the wakeups
    (post_time, "cross-thread-posts", 10_000, 9_999),  # POST_MIN_US
    (main_lock, "main-thread-lock", 300_000, 299_999),  # MAIN_LOCK_SHARE: 1% of 30 s
    (lambda us: main_lock(us, None), "main-thread-lock", 10_000, 9_999),  # MAIN_LOCK_WAIT_US
    (flush_rate, "access-log-flush", 300, 299),  # ACCESS_LOG_WAKES_PER_S: 10 a second
    (log_lock, "access-log-flush", 10_000, 9_999),  # ACCESS_LOG_WORKER_WAIT_US
], ids=["post-share", "post-time", "main-lock", "main-lock-no-duration", "flush-rate",
        "log-lock"])
def test_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)


def test_access_log_warning_from_a_hundred_flushes_a_second() -> None:  # ACCESS_LOG_WARN_PER_S
    assert one(flush_rate(3000).report(), "access-log-flush").severity == "warning"
    assert one(flush_rate(2999).report(), "access-log-flush").severity == "info"


def test_main_thread_lock_says_what_it_saw_not_what_it_guesses() -> None:
    f = one(main_lock(400_000).report(), "main-thread-lock")
    assert "until the main thread woke them (50 wakeups): a lock it held, or a condition " \
        "it signalled. Its user frames do not say what for" in f.text
