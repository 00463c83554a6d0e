"""Aggregation, naming and roles: sums, shares, grouping by waker name and by thread.

``Mesh`` builds small recordings of an Istio pod (Envoy + pilot-agent in istio-proxy, an
app container, coredns, a noisy batch pod) edge by edge; the test_findings*.py files use
it too.
"""

from __future__ import annotations

import io
import json
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import (
    Edge,
    EnvoyStats,
    OnCpu,
    Pending,
    ProcessInfo,
    Queued,
    Recording,
    Stack,
    Task,
    Throttling,
)
from kubectl_offwake.analysis.naming import Namer, bare_name, is_kernel_comm
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.analysis.roles import Roles, role_of_comm
from kubectl_offwake.render import RenderOptions, render

ENVOY, PILOT, APP, COREDNS, CRUNCHER, KUBELET = 100, 90, 300, 200, 400, 606
SWAPPER, KSOFTIRQD = 0, 14
WORKER_TIDS = {"wrk:worker_0": 110, "wrk:worker_1": 111, "wrk:worker_2": 112}
ENVOY_THREADS = {"envoy": ENVOY, **WORKER_TIDS, "dog:main": 104, "AccessLogFlush": 105,
                 "grpc_global_tim": 106}

SYSCALL = ("do_syscall_64", "entry_SYSCALL_64_after_hwframe")
W_TCP = ("try_to_wake_up", "ep_poll_callback", "__wake_up_common", "sock_def_readable",
         "tcp_data_queue", "tcp_rcv_established", "tcp_v4_do_rcv", "tcp_v4_rcv",
         "net_rx_action", "handle_softirqs", "do_softirq", "__local_bh_enable_ip",
         "ip_finish_output2", "tcp_sendmsg", "sock_sendmsg") + SYSCALL
W_TCP_IRQ = ("try_to_wake_up", "ep_poll_callback", "sock_def_readable", "tcp_data_queue",
             "tcp_rcv_established", "tcp_v4_rcv", "net_rx_action", "handle_softirqs",
             "irq_exit_rcu", "common_interrupt", "asm_common_interrupt")
W_ACCEPT = ("try_to_wake_up", "ep_poll_callback", "sock_def_readable", "tcp_child_process",
            "tcp_v4_rcv", "net_rx_action", "handle_softirqs", "do_softirq",
            "__local_bh_enable_ip", "ip_finish_output2", "tcp_v4_connect",
            "__sys_connect") + SYSCALL
W_UDP = ("try_to_wake_up", "ep_poll_callback", "sock_def_readable",
         "__udp_enqueue_schedule_skb", "udp_queue_rcv_one_skb", "udp_rcv", "net_rx_action",
         "handle_softirqs", "do_softirq", "__local_bh_enable_ip", "ip_finish_output2",
         "udp_sendmsg", "__sys_sendto") + SYSCALL
W_UNIX = ("try_to_wake_up", "ep_poll_callback", "sock_def_readable", "unix_stream_sendmsg",
          "sock_sendmsg", "__sys_sendmsg") + SYSCALL
W_EVENTFD = ("try_to_wake_up", "ep_poll_callback", "__wake_up_locked_key", "eventfd_write",
             "vfs_write", "ksys_write") + SYSCALL
W_FUTEX = ("try_to_wake_up", "wake_up_q", "futex_wake", "do_futex",
           "__x64_sys_futex") + SYSCALL
W_TIMER = ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues", "hrtimer_interrupt",
           "__sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt", "do_idle")
T_EPOLL = ("__schedule", "schedule", "schedule_hrtimeout_range_clock", "do_epoll_wait",
           "__x64_sys_epoll_wait") + SYSCALL
T_FUTEX = ("__schedule", "schedule", "futex_wait_queue", "futex_wait", "do_futex",
           "__x64_sys_futex") + SYSCALL
T_PREEMPT = ("__schedule", "schedule", "exit_to_user_mode_loop", "irqentry_exit_to_user_mode",
             "asm_sysvec_apic_timer_interrupt")

U_POST = ("__write", "Envoy::Event::DispatcherImpl::post(std::function<void ()>)")
U_ACCESS_LOG = ("syscall", "absl::CondVar::Signal()",
                "Envoy::AccessLog::AccessLogFileImpl::write(std::basic_string_view<char>)")


class Mesh:
    """A recording of one Istio pod's Envoy, built edge by edge."""

    def __init__(self, duration_s: Optional[float] = 30.0, counts: bool = True) -> None:
        self.rec = Recording()
        if duration_s is not None:
            self.rec.source["elapsed_s"] = duration_s
        self.counts = counts
        p = self.rec.processes
        p[ENVOY] = ProcessInfo(ENVOY, "envoy", pod="app/productpage-v1", container="istio-proxy",
                               exe="/usr/local/bin/envoy",
                               threads={tid: comm for comm, tid in ENVOY_THREADS.items()})
        p[PILOT] = ProcessInfo(PILOT, "pilot-agent", pod="app/productpage-v1",
                               container="istio-proxy")
        p[APP] = ProcessInfo(APP, "gunicorn", pod="app/productpage-v1", container="productpage")
        p[COREDNS] = ProcessInfo(COREDNS, "coredns", pod="kube-system/coredns-5d78c",
                                 container="coredns")
        p[CRUNCHER] = ProcessInfo(CRUNCHER, "cruncher", pod="batch/cruncher-7d9",
                                  container="cruncher")
        p[KUBELET] = ProcessInfo(KUBELET, "kubelet")
        p[SWAPPER] = ProcessInfo(SWAPPER, "swapper/0", kernel_thread=True)
        p[KSOFTIRQD] = ProcessInfo(KSOFTIRQD, "ksoftirqd/0", kernel_thread=True)
        self.rec.targets.append(p[ENVOY])

    @staticmethod
    def task(comm: str, pid: int = ENVOY, tid: Optional[int] = None) -> Task:
        if tid is None:
            tid = ENVOY_THREADS.get(comm, pid) if pid == ENVOY else pid
        return Task(comm, pid, tid)

    def stack(self, kernel: Sequence[str], user: Sequence[str] = ()) -> Stack:
        return self.rec.stacks.intern(tuple(kernel) + tuple(user), len(kernel))

    def wake(self, target: str, waker: Optional[Task], waker_kernel: Sequence[str],
             count: int, total_us: int, waker_user: Sequence[str] = (),
             target_kernel: Sequence[str] = T_EPOLL, runq_us: int = 0,
             max_us: Optional[int] = None) -> Edge:
        edge = Edge(
            target=self.task(target), target_stack=self.stack(target_kernel),
            waker=waker, waker_stack=self.stack(waker_kernel, waker_user),
            total_us=total_us, count=count if self.counts else None,
            max_us=(max_us or total_us // max(count, 1) * 2) if self.counts else None,
            blocked_us=total_us - runq_us if self.counts else None,
            runq_us=runq_us if self.counts else None,
        )
        self.rec.edges.append(edge)
        return edge

    def preempt(self, target: str, count: int, total_us: int,
                by: Optional[Task] = None) -> Edge:
        edge = Edge(target=self.task(target), target_stack=self.stack(T_PREEMPT), waker=None,
                    waker_stack=None, total_us=total_us,
                    count=count if self.counts else None,
                    max_us=total_us // max(count, 1) if self.counts else None,
                    blocked_us=0 if self.counts else None,
                    runq_us=total_us if self.counts else None, preempted=True,
                    preempted_by=by)
        self.rec.edges.append(edge)
        return edge

    def oncpu(self, comm: str, total_us: int, max_us: int, count: int = 1000,
              busy_us: Optional[int] = None) -> None:
        self.rec.oncpu.append(OnCpu(self.task(comm), count, total_us, max_us,
                                    max_busy_us=busy_us))

    def pending(self, comm: str, waiting_us: int, kernel: Sequence[str],
                preempted: bool = False) -> None:
        self.rec.pending.append(Pending(self.task(comm), waiting_us, self.stack(kernel),
                                        preempted))

    def queued(self, target: str, holder: Optional[Task], count: int, wait_us: int) -> None:
        """Run-queue waits of ``target`` behind ``holder`` (None: an idle CPU)."""
        self.rec.queued.append(Queued(self.task(target), holder, count, wait_us,
                                      wait_us // max(count, 1)))

    def envoy_stats(self, delta: Dict[str, int], listeners: Optional[Dict[str, int]] = None,
                    window_s: float = 30.0, read: bool = True) -> None:
        """What Envoy counted over the trace (``read=False``: its admin did not answer)."""
        self.rec.envoy_stats.append(EnvoyStats(
            ENVOY, "127.0.0.1:15000" if read else None, window_s if read else None,
            dict(delta) if read else {}, dict(listeners or {})))

    def throttled(self, nr_throttled: int, throttled_usec: int = 0,
                  nr_periods: int = 300) -> None:
        self.rec.throttling.append(Throttling(
            ENVOY, "/kubepods.slice/x", start={"nr_periods": 1000, "nr_throttled": 50,
                                               "throttled_usec": 10_000},
            end={"nr_periods": 1000 + nr_periods, "nr_throttled": 50 + nr_throttled,
                 "throttled_usec": 10_000 + throttled_usec}))

    def report(self) -> Report:
        return analyze(self.rec)


def waker(pid: int, comm: Optional[str] = None, tid: Optional[int] = None) -> Task:
    comms = {PILOT: "pilot-agent", APP: "gunicorn", COREDNS: "coredns", CRUNCHER: "cruncher",
             KUBELET: "kubelet", SWAPPER: "swapper/0", KSOFTIRQD: "ksoftirqd/0"}
    return Task(comm or comms[pid], pid, tid if tid is not None else pid)


def basic() -> Mesh:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 400, 4_000_000, runq_us=40_000)
    m.wake("wrk:worker_0", waker(APP, "gunicorn", APP + 1), W_TCP, 100, 1_000_000,
           runq_us=10_000)
    m.wake("wrk:worker_1", waker(SWAPPER), W_TIMER, 30, 3_000_000)
    m.wake("envoy", waker(PILOT), W_UNIX, 20, 2_000_000)
    m.wake("wrk:worker_1", Mesh.task("envoy"), W_EVENTFD, 10, 500_000, waker_user=U_POST)
    m.preempt("wrk:worker_0", 5, 500_000, by=waker(CRUNCHER))
    m.oncpu("wrk:worker_0", 1_000_000, 5_000)
    m.oncpu("wrk:worker_2", 10_000, 100)  # never slept: only on-CPU runs
    return m


def _group(groups, key):
    found = [g for g in groups if g.key == key]
    assert len(found) == 1, [g.key for g in groups]
    return found[0]


def test_totals_and_shares() -> None:
    r = basic().report()
    assert r.totals.off_cpu_us == 11_000_000
    assert r.totals.wakeups == 565
    assert r.totals.edges == 6
    assert r.totals.runq_us == 40_000 + 10_000 + 500_000
    assert r.totals.threads == 4  # worker_0, worker_1, envoy, and worker_2 (on-CPU only)
    assert sum(g.share for g in r.by_category) == pytest.approx(1.0)
    assert sum(g.share for g in r.by_waker) == pytest.approx(1.0)
    tcp = _group(r.by_category, "tcp-receive")
    assert (tcp.edges, tcp.count, tcp.total_us) == (2, 500, 5_000_000)
    assert tcp.share == pytest.approx(5 / 11)
    assert tcp.label == "TCP receive"
    assert [g.total_us for g in r.by_category] == sorted(
        (g.total_us for g in r.by_category), reverse=True)


def test_wakeups_sorted_largest_first() -> None:
    r = basic().report()
    totals = [w.edge.total_us for w in r.wakeups]
    assert totals == sorted(totals, reverse=True)


def test_wakers_group_by_process_not_thread() -> None:
    r = basic().report()
    app = _group(r.by_waker, "waker:app/productpage-v1/productpage (gunicorn)")
    assert (app.edges, app.count, app.total_us) == (2, 500, 5_000_000)


def _rendered(report: Report, fmt: str) -> str:
    out = io.StringIO()
    render(report, fmt, out, RenderOptions(width=160))
    return out.getvalue()


def test_short_lived_wakers_of_one_name_are_one_row_everywhere() -> None:
    """A shell loop in the app container starts a curl every few ms: 200 processes (most
    gone before the collector read /proc, named by the cgroup BPF saw), one name. Two
    hundred host curls are one ``host: curl`` too; the findings say the same names with the
    same totals as the table, the HTML and the JSON."""
    m = Mesh()
    for i in range(200):
        pid = 5000 + i
        m.rec.processes[pid] = ProcessInfo(pid, "curl", pod="demo/reviews-v1",
                                           container="reviews", gone=True)
        m.rec.processes[pid + 4000] = ProcessInfo(pid + 4000, "curl", gone=True)
        m.wake("wrk:worker_0", Task("curl", pid, pid), W_TCP, 2, 20_000)
        m.wake("wrk:worker_1", Task("curl", pid + 4000, pid + 4000), W_TCP, 1, 10_000)
    m.wake("wrk:worker_1", waker(APP), W_TCP, 50, 1_000_000)
    r = m.report()
    app = "demo/reviews-v1/reviews (curl)"
    assert [(g.label, g.edges, g.count, g.total_us) for g in r.by_waker] == [
        (app, 200, 400, 4_000_000), ("host: curl", 200, 200, 2_000_000),
        ("app/productpage-v1/productpage (gunicorn)", 1, 50, 1_000_000)]
    finding = next(f for f in r.findings if f.id == "dominant-waker")
    assert finding.evidence["waker"] == app and finding.evidence["wakeups"] == 400
    assert f"{app} caused 62% of all wakeups (400 of 650)" in finding.text
    table = _rendered(r, "table").split("Who woke the threads", 1)[1].split("Target threads")[0]
    assert table.count(app) == 1 and table.count("host: curl") == 1 and "more" not in table
    html = _rendered(r, "html")
    assert html.count(f"<td>{app}</td>") == 1 and html.count("<td>host: curl</td>") == 1
    doc = json.loads(_rendered(r, "json"))
    assert [(g["key"], g["name"], g["count"]) for g in doc["by_waker"]][:2] == [
        (f"waker:{app}", app, 400), ("waker:host: curl", "host: curl", 200)]


def test_two_processes_of_one_container_are_told_apart() -> None:
    m = basic()
    r = m.report()
    labels = {g.label for g in r.by_waker}
    assert "app/productpage-v1/istio-proxy (pilot-agent)" in labels
    assert "app/productpage-v1/istio-proxy (envoy)" in labels


def test_preemptions_group_under_the_preemptor() -> None:
    r = basic().report()
    g = _group(r.by_waker, "preempted:batch/cruncher-7d9/cruncher")
    assert g.label == "preempted by batch/cruncher-7d9/cruncher"
    assert g.total_us == 500_000
    w = next(w for w in r.wakeups if w.edge.preempted)
    assert w.waker is None and w.cause == "none"
    assert w.preempted_by is not None and w.preempted_by.pod == "batch/cruncher-7d9"


def test_by_thread_with_categories_and_oncpu() -> None:
    r = basic().report()
    threads = {t.target.comm: t for t in r.by_thread}
    w0 = threads["wrk:worker_0"]
    assert w0.total_us == 5_500_000 and w0.count == 505
    assert [g.key for g in w0.by_category] == ["tcp-receive", "preempted-involuntary"]
    assert w0.by_category[0].share == pytest.approx(5 / 11)
    assert w0.oncpu is not None and w0.oncpu.total_us == 1_000_000
    assert w0.target.role == "worker" and w0.target.name == "app/productpage-v1/istio-proxy"
    w2 = threads["wrk:worker_2"]
    assert (w2.total_us, w2.count, w2.by_category) == (0, 0, [])
    assert w2.oncpu is not None and w2.oncpu.max_us == 100
    assert [t.total_us for t in r.by_thread] == sorted(
        (t.total_us for t in r.by_thread), reverse=True)


def test_unknown_counts_stay_unknown() -> None:
    m = Mesh(duration_s=None, counts=False)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1, 4_000_000)
    m.wake("envoy", waker(PILOT), W_UNIX, 1, 1_000_000)
    r = m.report()
    assert r.totals.off_cpu_us == 5_000_000
    assert r.totals.wakeups is None and r.totals.blocked_us is None
    assert all(g.count is None and g.max_us is None for g in r.by_category)
    assert all(t.count is None for t in r.by_thread)


def test_mixed_known_and_unknown_counts_is_unknown() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 10, 4_000_000)
    m.rec.edges.append(Edge(Mesh.task("wrk:worker_0"), m.stack(T_EPOLL), waker(APP),
                            m.stack(W_TCP), 1000, count=None))
    r = m.report()
    assert r.totals.wakeups is None
    assert _group(r.by_category, "tcp-receive").count is None


def test_empty_recording() -> None:
    r = analyze(Recording())
    assert r.totals.off_cpu_us == 0 and r.totals.wakeups == 0 and r.totals.edges == 0
    assert r.wakeups == [] and r.by_category == [] and r.by_thread == [] and r.findings == []


def test_report_carries_pending_throttling_warnings_source() -> None:
    m = basic()
    m.pending("wrk:worker_1", 2_000_000, T_FUTEX)
    m.throttled(3)
    m.rec.warnings.append("something was odd")
    r = m.report()
    assert r.pending == m.rec.pending and r.throttling == m.rec.throttling
    assert r.warnings == ["something was odd"] and r.source["elapsed_s"] == 30.0


# -- naming --------------------------------------------------------------------------------

@pytest.mark.parametrize("info,comm,name", [
    (ProcessInfo(1, "envoy", pod="app/p", container="istio-proxy"), "wrk:worker_0",
     "app/p/istio-proxy"),
    (ProcessInfo(1, "envoy", label="edge-proxy"), "envoy", "edge-proxy"),
    (ProcessInfo(1, "envoy", pod="app/p"), "envoy", "app/p"),
    (ProcessInfo(7, "kworker/1:1", kernel_thread=True), "kworker/1:1", "kernel: kworker/1:1"),
    (ProcessInfo(606, "kubelet"), "kubelet", "host: kubelet"),
    (ProcessInfo(606, "kubelet"), "kubelet-worker", "host: kubelet"),  # process, not thread
    (ProcessInfo(0, "swapper/0"), "swapper/1", "kernel: swapper/1"),
])
def test_party_names(info: ProcessInfo, comm: str, name: str) -> None:
    rec = Recording(processes={info.pid: info})
    assert Namer(rec).party(Task(comm, info.pid, info.pid + 1)).name == name


@pytest.mark.parametrize("comm,kernel", [
    ("swapper/0", True), ("ksoftirqd/12", True), ("kworker/u8:2-events_unbound", True),
    ("migration/3", True), ("rcu_preempt", True), ("rcu_sched", True), ("idle_inject/0", True),
    ("kubelet", False), ("envoy", False), ("wrk:worker_0", False), ("kworkerish", False),
])
def test_kernel_comms(comm: str, kernel: bool) -> None:
    assert is_kernel_comm(comm) is kernel
    assert bare_name(comm) == (f"kernel: {comm}" if kernel else comm)


def test_unknown_task_found_by_thread_id() -> None:
    info = ProcessInfo(100, "envoy", pod="app/p", container="istio-proxy", threads={110: "w"})
    rec = Recording(processes={100: info})
    party = Namer(rec).party(Task("wrk:worker_0", None, 110))
    assert party.name == "app/p/istio-proxy" and party.pid == 100


# -- roles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("comm,role", [
    ("envoy", "main"), ("wrk:worker_0", "worker"), ("wrk:worker_15", "worker"),
    ("dog:main", "watchdog"), ("dog:workers", "watchdog"),
    ("AccessLogFlush", "access-log-flush"), ("grpc_global_tim", "grpc-timer"),
    ("GrpcGoogClient", "other"), ("wrk:worker_x", "other"),
])
def test_role_of_comm(comm: str, role: str) -> None:
    assert role_of_comm(comm) == role


def _roles(processes: Dict[int, ProcessInfo], tasks: List[Task]) -> Tuple[Roles, List[Task]]:
    rec = Recording(processes=processes)
    stack = rec.stacks.intern(T_EPOLL, len(T_EPOLL))
    for t in tasks:
        rec.edges.append(Edge(t, stack, None, None, 1, preempted=True))
    return Roles(rec), tasks


def test_roles_only_for_envoy_processes() -> None:
    roles, _ = _roles({1: ProcessInfo(1, "envoy"), 2: ProcessInfo(2, "java"),
                       3: ProcessInfo(3, "istio-envoy", exe="/usr/bin/envoy-1.31"),
                       4: ProcessInfo(4, "proxy", threads={41: "wrk:worker_0"})}, [])
    assert roles.role(Task("GrpcGoogClient", 1, 12)) == "other"
    assert roles.role(Task("dog:main", 2, 21)) is None
    assert roles.role(Task("envoy", 3, 3)) == "main"
    assert roles.role(Task("dog:main", 4, 42)) == "watchdog"


def test_roles_from_thread_names_seen_in_the_recording() -> None:
    roles, _ = _roles({}, [Task("wrk:worker_0", 9, 91), Task("dog:main", 8, 81)])
    assert roles.role(Task("AccessLogFlush", 9, 92)) == "access-log-flush"
    assert roles.role(Task("dog:main", 8, 81)) is None  # no Envoy signature in process 8


def test_roles_without_pids() -> None:
    roles, _ = _roles({}, [Task("wrk:worker_0", None, 91)])
    assert roles.role(Task("envoy", None, 90)) == "main"
    assert roles.role(Task("grpc_global_tim", None, 93)) == "grpc-timer"
    assert roles.role(Task("kubelet", None, 606)) is None  # never "other" without a pid
    lonely, _ = _roles({}, [Task("dog:main", None, 1)])
    assert lonely.role(Task("dog:main", None, 1)) is None
