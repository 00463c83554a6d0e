"""The real collector on small C programs with known wake patterns (root + eBPF).

All programs run at once under ONE collector (one BPF compile for the whole module); each
scenario then picks its own threads out of the one report by the tids its program printed.
The report is produced by the real importer and the real classifier, so these tests check
the collector, the wire format and the analysis end to end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Dict, Optional, Tuple

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs"))
import harness  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]

harness.skip_module_unless_runnable()

ITERS = 20
PERIOD_MS = 20
HOG_MS = 800

# name -> (target comm, waker comm, category, cause, target user fn, waker user fn)
WAKER_SCENARIOS: Dict[str, Tuple[str, str, str, str, str, str]] = {
    "eventfd": ("t-eventfd", "w-eventfd", "eventfd", "waker", "target_loop", "waker_loop"),
    "futex": ("t-futex", "w-futex", "futex-wake", "waker", "target_loop", "waker_loop"),
    "pipe": ("t-pipe", "w-pipe", "pipe", "waker", "target_loop", "waker_loop"),
    "unix": ("t-unix", "w-unix", "unix-socket", "waker", "target_loop", "waker_loop"),
    "tcp": ("t-tcp", "w-tcp", "tcp-receive", "waker", "target_loop", "waker_loop"),
    "udp": ("t-udp", "w-udp", "udp-receive", "waker", "target_loop", "waker_loop"),
    "signal": ("t-signal", "w-signal", "signal", "waker", "target_loop", "waker_loop"),
}
PROGRAMS = [*WAKER_SCENARIOS, "tcp_accept_close", "sleep", "hog"]


@pytest.fixture(scope="module")
def session():
    tmp = tempfile.mkdtemp(prefix="h5-progs-")
    progs: Dict[str, harness.Prog] = {}
    try:
        for name in PROGRAMS:
            exe = harness.compile_prog(name, tmp)
            progs[name] = (harness.Prog(exe, HOG_MS // 10, 10) if name == "hog"
                           else harness.Prog(exe, ITERS, PERIOD_MS))
        yield harness.trace(progs)
    finally:
        for p in progs.values():
            p.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _edges(report, target_tid: int, waker_tid: Optional[int] = None, preempted: bool = False):
    out = []
    for w in report.wakeups:
        if w.target.tid != target_tid or w.edge.preempted != preempted:
            continue
        if waker_tid is not None and (w.waker is None or w.waker.tid != waker_tid):
            continue
        out.append(w)
    return out


def test_stream_is_complete(session):
    assert session.exit_code == 0, session.stderr[-2000:]
    types = [r["type"] for r in session.records]
    assert types[0] == "hello" and types[-1] == "end"
    assert session.records[-1]["reason"] == "signal"
    seqs = [r["seq"] for r in session.records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert session.records[0]["headers"]["source"] in ("host", "kheaders", "fallback")
    # stacks are sent once per id, and every referenced id was sent before its use
    sent = set()
    for r in session.records:
        if r["type"] == "stack":
            assert r["id"] not in sent
            sent.add(r["id"])
        elif r["type"] in ("wakeup", "pending"):
            assert r["target_stack"] in sent
            if "waker_stack" in r:
                assert r["waker_stack"] in sent
    end = session.records[-1]
    assert end["totals"]["switches"] > 0 and end["totals"]["wakeups"] > 0
    assert end["lost"]["stack_eexist"] == 0 and end["lost"]["map_full"] == 0
    # the kernel stack cache was used, and its verifying walks agreed with it
    totals = end["totals"]
    assert totals["kstack_cache_hits"] > 0
    assert totals["kstack_cache_mismatches"] <= 0.01 * totals["kstack_cache_hits"]
    # every pid of a target is identified, with its threads
    procs = {r["pid"]: r for r in session.records if r["type"] == "process"}
    for p in session.progs.values():
        assert p.pid in procs
        assert str(p.target_tid) in procs[p.pid]["threads"]


@pytest.mark.parametrize("name", sorted(WAKER_SCENARIOS))
def test_waker_scenario(session, name):
    t_comm, w_comm, category, cause, t_fn, w_fn = WAKER_SCENARIOS[name]
    prog = session.progs[name]
    edges = _edges(session.report, prog.target_tid, prog.waker_tid)
    assert edges, f"no edge from {w_comm} to {t_comm}"
    main = max(edges, key=lambda w: w.edge.count or 0)
    assert main.category == category, (main.category, main.rule, main.waker_stack_frames
                                       if hasattr(main, "waker_stack_frames") else
                                       main.edge.waker_stack.frames)
    assert main.cause == cause
    assert main.target.comm == t_comm and main.target.pid == prog.pid
    assert main.waker.comm == w_comm and main.waker.pid == prog.pid
    # stacks: our functions in the user halves, the kernel halves present
    assert t_fn in harness.user_frames_of(main.edge.target_stack)
    assert w_fn in harness.user_frames_of(main.edge.waker_stack)
    assert harness.kernel_frames_of(main.edge.target_stack)
    assert harness.kernel_frames_of(main.edge.waker_stack)[0] in ("try_to_wake_up",
                                                                  "ttwu_do_activate")
    # times: ITERS wakes, each after about PERIOD_MS blocked
    same = [w for w in edges if w.category == category]
    count = sum(w.edge.count or 0 for w in same)
    total = sum(w.edge.total_us for w in same)
    blocked = sum(w.edge.blocked_us or 0 for w in same)
    assert ITERS - 1 <= count <= ITERS, count
    expect = count * PERIOD_MS * 1000
    assert 0.9 * expect <= blocked <= 2.0 * expect, (blocked, expect)
    assert blocked <= total
    assert max(w.edge.max_us or 0 for w in same) >= PERIOD_MS * 1000 * 0.9


def test_tcp_accept_and_close(session):
    prog = session.progs["tcp_accept_close"]
    edges = _edges(session.report, prog.target_tid, prog.waker_tid)
    by_cat: Dict[str, list] = {}
    for w in edges:
        by_cat.setdefault(w.category, []).append(w)
    for category in ("tcp-accept", "tcp-close"):
        assert category in by_cat, sorted(by_cat)
        got = by_cat[category]
        assert ITERS - 1 <= sum(w.edge.count or 0 for w in got) <= ITERS
        main = max(got, key=lambda w: w.edge.count or 0)
        assert main.cause == "waker"
        assert main.waker.comm == "w-accept" and main.target.comm == "t-accept"
        assert "target_loop" in harness.user_frames_of(main.edge.target_stack)
        assert "waker_loop" in harness.user_frames_of(main.edge.waker_stack)
        blocked = sum(w.edge.blocked_us or 0 for w in got)
        expect = sum(w.edge.count or 0 for w in got) * PERIOD_MS * 1000
        assert 0.9 * expect <= blocked <= 2.5 * expect, (category, blocked, expect)


@pytest.mark.parametrize("thread,detail,fn", [("target", "sleep", "target_loop"),
                                               ("waker", "epoll-timeout", "epoll_loop")])
def test_timers(session, thread, detail, fn):
    prog = session.progs["sleep"]
    tid = prog.target_tid if thread == "target" else prog.waker_tid
    edges = [w for w in _edges(session.report, tid) if w.category == "timer"]
    assert edges, [(w.category, w.rule) for w in _edges(session.report, tid)]
    count = sum(w.edge.count or 0 for w in edges)
    assert ITERS - 1 <= count <= ITERS
    main = max(edges, key=lambda w: w.edge.count or 0)
    assert main.detail == detail
    assert main.cause in ("interrupt", "ksoftirqd", "waker")
    assert fn in harness.user_frames_of(main.edge.target_stack)
    blocked = sum(w.edge.blocked_us or 0 for w in edges)
    expect = count * PERIOD_MS * 1000
    assert 0.9 * expect <= blocked <= 2.0 * expect


def test_preemption_by_hog(session):
    prog = session.progs["hog"]
    edges = _edges(session.report, prog.target_tid, preempted=True)
    assert edges
    by_hog = [w for w in edges if w.preempted_by is not None and w.preempted_by.tid ==
              prog.waker_tid]
    assert by_hog, [(w.preempted_by, w.category) for w in edges]
    main = max(by_hog, key=lambda w: w.edge.total_us)
    assert main.category in ("preempted-involuntary", "preempted-voluntary")
    assert main.cause == "none" and main.waker is None
    assert main.preempted_by.comm == "hog" and main.preempted_by.pid == prog.pid
    # where it was preempted: a shallow kernel stack (user stacks of preemptions are only
    # recorded with --preempt-user-stacks)
    kernel = harness.kernel_frames_of(main.edge.target_stack)
    assert kernel and kernel[0] == "__schedule" and len(kernel) <= 8, kernel
    assert not harness.user_frames_of(main.edge.target_stack)
    # The target lost its CPU for a good part of the run, in many slices (on a shared test
    # machine other tasks take their turns on that CPU too, so the hog's share varies).
    wall_us = HOG_MS * 1000
    assert prog.started is not None and prog.done_at is not None
    ran_us = (prog.done_at - prog.started) * 1e6  # >= HOG_MS; more when the machine is busy
    runq = sum(w.edge.runq_us or 0 for w in edges)
    assert sum(w.edge.count or 0 for w in edges) >= 5
    assert 0.15 * wall_us <= runq <= ran_us, (runq, wall_us, ran_us)
    assert all(w.edge.runq_us == w.edge.total_us and not w.edge.blocked_us for w in edges)
    # and its own run lengths were recorded
    oncpu = [o for o in session.recording.oncpu if o.task.tid == prog.target_tid]
    assert oncpu and oncpu[0].count >= 5 and oncpu[0].max_us >= 500
