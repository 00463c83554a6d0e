"""Analysis at benchmark size: 100k edges over 30k distinct stacks, linear in the edges.

A busy 60 s trace of a large Envoy reaches tens of thousands of distinct (waker stack,
target stack) pairs; ``kubectl offwake report`` must still answer at once, so analysis
must stay O(1) per edge. The recording is synthetic but shaped like a real one (deep
kernel stacks, unique frames per stack, interned tasks and stacks as the importers make
them). No time limit (this machine's speed is no fact about the code): a tenth of the
recording is analysed beside the whole, and ten times the edges must cost far less than
the hundred times a quadratic step gives. CPU time is measured, not wall time, so a busy
machine disturbs it less; ``bench/report`` compares the speed itself against another
revision.
"""

from __future__ import annotations

import random
import time

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Edge, OnCpu, ProcessInfo, Recording, Task

EDGES = 100_000
STACKS = 30_000
#: Ten times the edges, linear: about 10x the CPU time; quadratic: about 100x.
SCALING_MAX = 30.0

HEADS = (
    ("hrtimer_wakeup", "__hrtimer_run_queues", "hrtimer_interrupt",
     "__sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt"),
    ("sock_def_readable", "tcp_data_queue", "tcp_rcv_established", "tcp_v4_do_rcv",
     "tcp_v4_rcv", "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
     "__netif_receive_skb_one_core", "process_backlog", "__napi_poll", "net_rx_action",
     "handle_softirqs", "do_softirq", "__local_bh_enable_ip", "ip_finish_output2",
     "tcp_sendmsg"),
    ("eventfd_write", "vfs_write", "ksys_write"),
    ("futex_wake", "do_futex", "__x64_sys_futex"),
    ("unix_stream_sendmsg", "sock_sendmsg", "__sys_sendto"),
    ("mystery_fn", "other_fn"),
)
PLUMBING = ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common",
            "ep_poll_callback", "__wake_up_common", "__wake_up_sync_key")


def build(edges: int = EDGES, stacks: int = STACKS, seed: int = 7) -> Recording:
    rnd = random.Random(seed)
    rec = Recording(source={"elapsed_s": 60.0})
    rec.processes[100] = ProcessInfo(100, "envoy", pod="app/p", container="istio-proxy")
    tasks: dict = {}

    def task(comm: str, pid: int, tid: int) -> Task:
        return tasks.setdefault((comm, pid, tid), Task(comm, pid, tid))

    wakers = []
    for i in range(stacks):
        kernel = PLUMBING + HEADS[i % len(HEADS)] + ("do_syscall_64", f"pad_{i}+0x{i:x}")
        user = tuple(f"Envoy::Fn{rnd.randrange(5000)}()" for _ in range(rnd.randrange(3, 30)))
        wakers.append(rec.stacks.intern(kernel + user, len(kernel)))
    targets = [rec.stacks.intern(("__schedule", "schedule", "schedule_hrtimeout_range_clock",
                                  "do_epoll_wait", "__x64_sys_epoll_wait", "do_syscall_64",
                                  f"user_{i}"), 6) for i in range(300)]
    preempt = rec.stacks.intern(("__schedule", "schedule", "exit_to_user_mode_loop"), 3)
    for i in range(edges):
        tid = 100 + i % 9
        target = task("envoy" if tid == 100 else f"wrk:worker_{tid - 101}", 100, tid)
        if i % 20 == 0:
            rec.edges.append(Edge(target, preempt, None, None, rnd.randrange(1, 10_000), 1, 10,
                                  0, 10, True, task("cruncher", 7000 + i % 50, 7000 + i % 50)))
            continue
        pid = 1000 + i % 3000
        rec.edges.append(Edge(target, targets[i % 300], task(f"proc{pid % 300}", pid, pid + 1),
                              wakers[rnd.randrange(stacks)], rnd.randrange(1, 100_000),
                              rnd.randrange(1, 100), 1000, 900, 100))
    for tid in range(100, 109):
        rec.oncpu.append(OnCpu(task("envoy" if tid == 100 else f"wrk:worker_{tid - 101}",
                                    100, tid), 100, 100_000, 5_000))
    return rec


def _cpu_seconds(rec: Recording) -> float:
    start = time.process_time()
    analyze(rec)
    return time.process_time() - start


@pytest.mark.slow
def test_100k_edges_analyse_in_time_linear_in_the_edges() -> None:
    rec = build()
    assert len(rec.edges) == EDGES and len(rec.stacks) >= STACKS
    assert len(analyze(rec).wakeups) == EDGES
    tenth = build(edges=EDGES // 10, stacks=STACKS // 10)
    small = min(_cpu_seconds(tenth) for _ in range(3))  # the smallest: the noisier run
    whole = _cpu_seconds(rec)
    ratio = whole / max(small, 1e-3)
    print(f"analyze: {whole:.2f} s CPU for {EDGES} edges, {ratio:.1f}x a tenth of them")
    assert ratio < SCALING_MAX, f"ten times the edges took {ratio:.0f}x the CPU time"


def test_small_recording_classifies_everything() -> None:
    rec = build(edges=5_000, stacks=1_500)
    report = analyze(rec)
    cats = {w.category for w in report.wakeups}
    assert {"timer", "tcp-receive", "eventfd", "futex-wake", "unix-socket", "other",
            "preempted-involuntary"} <= cats
