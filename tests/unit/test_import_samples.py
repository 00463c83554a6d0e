"""Realistic wire recordings for the wire and importer tests (helpers only, no tests).

The recording is what the collector would send for an Istio sidecar's Envoy (pid 4182:
main thread ``envoy``, workers ``wrk:worker_0``/``wrk:worker_1``) over two snapshots:
kubelet's readiness probe waking a worker over TCP (loopback softirq on kubelet's own
transmit), swapper/0 waking the main thread from an APIC timer interrupt, pilot-agent's xDS
stream over a unix socket, the main thread's eventfd post to a worker, coredns answering
over UDP, and a worker preempted by a noisy neighbour.
"""

from __future__ import annotations

import gzip
import io
from typing import Dict, List, Tuple

from kubectl_offwake.wire import WireWriter

ENVOY = 4182
WORKER_0 = 4450
WORKER_1 = 4451
KUBELET = 598
KUBELET_TID = 606
PILOT = 1187
PILOT_TID = 1201
COREDNS = 2210
NOISY = 7301

# Stacks leaf first, kernel frames first (the wire's order); (frames, kernel_depth).
EPOLL_KERNEL = ["finish_task_switch.isra.0", "__schedule", "schedule",
                "schedule_hrtimeout_range_clock", "ep_poll", "do_epoll_wait",
                "__x64_sys_epoll_wait", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
STACKS: Dict[int, Tuple[List[str], int]] = {
    1: (EPOLL_KERNEL + ["epoll_wait", "epoll_dispatch", "event_base_loop",
                        "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
                        "Envoy::Server::WorkerImpl::threadRoutine", "start_thread"], 9),
    2: (EPOLL_KERNEL + ["epoll_wait", "event_base_loop", "Envoy::Server::InstanceImpl::run()",
                        "main"], 9),
    3: (["ep_autoremove_wake_function", "__wake_up_common", "__wake_up_common_lock", "__wake_up",
         "ep_poll_callback", "__wake_up_common", "__wake_up_sync_key", "sock_def_readable",
         "tcp_data_ready", "tcp_data_queue", "tcp_rcv_established", "tcp_v4_do_rcv", "tcp_v4_rcv",
         "ip_protocol_deliver_rcu", "ip_local_deliver_finish", "ip_local_deliver", "ip_rcv",
         "__netif_receive_skb_one_core", "process_backlog", "__napi_poll", "net_rx_action",
         "__do_softirq", "do_softirq", "__local_bh_enable_ip", "ip_finish_output2",
         "ip_output", "__ip_queue_xmit", "__tcp_transmit_skb", "tcp_write_xmit",
         "tcp_sendmsg", "sock_write_iter", "vfs_write", "ksys_write", "do_syscall_64",
         "entry_SYSCALL_64_after_hwframe", "syscall.write", "net.(*conn).Write",
         "net/http.(*persistConn).writeLoop", "runtime.goexit.abi0"], 35),
    4: (["hrtimer_wakeup", "__hrtimer_run_queues", "hrtimer_interrupt",
         "__sysvec_apic_timer_interrupt", "sysvec_apic_timer_interrupt",
         "asm_sysvec_apic_timer_interrupt", "default_idle", "do_idle", "cpu_startup_entry"], 9),
    5: (["ep_autoremove_wake_function", "__wake_up_common", "ep_poll_callback",
         "__wake_up_sync_key", "sock_def_readable", "unix_stream_sendmsg", "sock_sendmsg",
         "sock_write_iter", "vfs_write", "ksys_write", "do_syscall_64",
         "entry_SYSCALL_64_after_hwframe", "syscall.write",
         "google.golang.org/grpc/internal/transport.(*loopyWriter).run"], 12),
    6: (["ep_autoremove_wake_function", "__wake_up_common", "ep_poll_callback",
         "__wake_up_locked_key", "eventfd_write", "vfs_write", "ksys_write", "do_syscall_64",
         "entry_SYSCALL_64_after_hwframe", "write", "evthread_notify_base_eventfd",
         "Envoy::Event::DispatcherImpl::post(std::function<void ()>)"], 9),
    7: (["ep_autoremove_wake_function", "__wake_up_common", "ep_poll_callback",
         "sock_def_readable", "__udp_enqueue_schedule_skb", "udp_queue_rcv_one_skb", "udp_rcv",
         "ip_local_deliver", "process_backlog", "net_rx_action", "__do_softirq",
         "__local_bh_enable_ip", "ip_finish_output2", "udp_send_skb", "udp_sendmsg",
         "__sys_sendto", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"], 18),
    8: (["finish_task_switch.isra.0", "__schedule", "schedule", "exit_to_user_mode_loop",
         "irqentry_exit_to_user_mode", "asm_sysvec_apic_timer_interrupt",
         "Envoy::Network::ConnectionImpl::onReadReady()", "event_base_loop"], 6),
}

# One wakeup record per edge per snapshot: (target pid, tid, comm, target stack,
# waker (pid, tid, comm) or None, waker stack, state, count, total, max, blocked, runq)
EDGES = [
    (ENVOY, WORKER_0, "wrk:worker_0", 1, (KUBELET, KUBELET_TID, "kubelet"), 3, "blocked",
     98, 1033000, 20500, 1025000, 8000),
    (ENVOY, ENVOY, "envoy", 2, (0, 0, "swapper/0"), 4, "blocked", 10, 2449000, 250100,
     2448000, 1000),
    (ENVOY, ENVOY, "envoy", 2, (PILOT, PILOT_TID, "pilot-agent"), 5, "blocked", 41, 749900,
     90000, 745000, 4900),
    (ENVOY, WORKER_1, "wrk:worker_1", 1, (ENVOY, ENVOY, "envoy"), 6, "blocked", 300, 451100,
     4000, 440000, 11100),
    (ENVOY, ENVOY, "envoy", 2, (COREDNS, COREDNS, "coredns"), 7, "blocked", 20, 120000,
     30000, 119000, 1000),
    (ENVOY, WORKER_1, "wrk:worker_1", 8, None, None, "preempted", 55, 9100, 900, 0, 9100),
]

COLLECTOR_WARNING = "2 stacks lost to hash collisions; raise --stack-storage"
#: Off-CPU time one snapshot of EDGES adds.
PER_SNAPSHOT_US = sum(edge[8] for edge in EDGES)


def recording_records(snapshots: int = 2, end: bool = True) -> List[Tuple[str, dict]]:
    """The (type, fields) records of a whole recording, in the order the collector sends."""
    out: List[Tuple[str, dict]] = [
        ("hello", {"schema": 1, "tool_version": "0.1.0", "collector": "bcc", "kernel": "6.1.0",
                   "node": "node-a", "started": 1764255000.0, "interval_s": 5,
                   "duration_s": 10, "headers": {"source": "bundled", "path": "/x"}}),
        ("target", {"processes": [{"pid": ENVOY, "comm": "envoy", "exe": "/usr/local/bin/envoy",
                                   "container_id": "a1b2c3", "runtime": "containerd",
                                   "pod_uid": "0b1c-22"}], "by": "container"}),
        ("process", {"pid": ENVOY, "comm": "envoy", "cgroup": "/kubepods/pod0b1c-22/a1b2c3",
                     "container_id": "a1b2c3", "runtime": "containerd", "pod_uid": "0b1c-22",
                     "kernel_thread": False,
                     "threads": {str(ENVOY): "envoy", str(WORKER_0): "wrk:worker_0",
                                 str(WORKER_1): "wrk:worker_1"}}),
        ("process", {"pid": KUBELET, "comm": "kubelet", "cgroup": "/system.slice/kubelet.service",
                     "kernel_thread": False}),
        ("process", {"pid": 0, "comm": "swapper/0", "kernel_thread": True}),
        ("process", {"pid": 9901, "comm": "curl", "gone": True}),
        ("identity", {"pid": ENVOY, "pod": "app/productpage-v1-6b7f", "container": "istio-proxy",
                      "node": "node-a"}),
        ("identity", {"pid": KUBELET, "label": "host: kubelet"}),
    ]
    for stack_id, (frames, depth) in STACKS.items():
        out.append(("stack", {"id": stack_id, "frames": frames, "kernel_depth": depth}))
    out.append(("cgroup_stat", {"pid": ENVOY, "cgroup": "/kubepods/pod0b1c-22/a1b2c3",
                                "phase": "start", "nr_periods": 100, "nr_throttled": 3,
                                "throttled_usec": 12000}))
    for snap in range(1, snapshots + 1):
        for (pid, tid, comm, tstack, waker, wstack, state, count, total, max_us, blocked,
             runq) in EDGES:
            fields = {"snap": snap, "tid": tid, "pid": pid, "comm": comm, "state": state,
                      "target_stack": tstack, "count": count, "total_us": total,
                      "max_us": max_us + snap, "blocked_us": blocked, "runq_us": runq}
            if waker is not None:
                fields.update(waker_pid=waker[0], waker_tid=waker[1], waker_comm=waker[2],
                              waker_stack=wstack)
            else:
                fields.update(preempted_by_pid=NOISY, preempted_by_comm="stress-ng-cpu")
            out.append(("wakeup", fields))
        out.append(("oncpu", {"snap": snap, "tid": WORKER_0, "pid": ENVOY,
                              "comm": "wrk:worker_0", "count": 100, "total_us": 5000,
                              "max_us": 400 * snap, "hist_log2_us": [0, 10, 60, 30]}))
        out.append(("progress", {"elapsed_s": 5.0 * snap, "switches": 1000 * snap,
                                 "wakeups": 900 * snap,
                                 "lost": {"stack_eexist": snap, "stack_enomem": 0,
                                          "map_full": 0}}))
        out.append(("snapshot", {"snap": snap, "elapsed_s": 5.0 * snap}))
    out.append(("log", {"level": "info", "message": "kernel headers from bundled fallback"}))
    if end:
        out.append(("pending", {"tid": WORKER_1, "pid": ENVOY, "comm": "wrk:worker_1",
                                "state": "blocked", "waiting_us": 10000000,
                                "target_stack": 1, "whole_run": True}))
        out.append(("cgroup_stat", {"pid": ENVOY, "cgroup": "/kubepods/pod0b1c-22/a1b2c3",
                                    "phase": "end", "nr_periods": 300, "nr_throttled": 40,
                                    "throttled_usec": 912000}))
        out.append(("end", {"reason": "duration", "elapsed_s": 10.0,
                            "totals": {"switches": 2100, "wakeups": 1900},
                            "lost": {"stack_eexist": 2, "stack_enomem": 0, "map_full": 0},
                            "warnings": [COLLECTOR_WARNING]}))
    return out


def recording_text(snapshots: int = 2, end: bool = True) -> str:
    """The recording as the collector writes it (JSON lines)."""
    buffer = io.StringIO()
    writer = WireWriter(buffer)
    for rtype, fields in recording_records(snapshots, end):
        writer.emit(dict(type=rtype, **fields))
    return buffer.getvalue()


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), mtime=0)
