"""A realistic, deterministic recording of an Istio sidecar's Envoy, built in code.

Renderer tests (golden files), the SVG/HTML tests and the report benchmark all start from
this one recording, so it carries every kind of thing a real trace has: wakers in the same
pod, in other pods, on the host and in the kernel; wakes done by the waker's own syscall,
from an interrupt (a bystander ``swapper/N``) and from ``ksoftirqd``; Envoy's cross-thread
``eventfd`` posts with user frames; futex and timer wakes; preemptions by a noisy
neighbour; on-CPU histograms with one stalled event loop; a thread still waiting at the
end; CPU throttling counters; lost stacks and warnings.

The numbers describe a 30 s trace of ``app/productpage-v1-6b7f`` (Envoy pid 4182) on a
6.x kernel. Frame names follow Linux 6.6 - 6.12 and Envoy 1.3x symbol names; every stack
is listed leaf first, kernel frames then user frames, as the wire format sends them.
Nothing depends on the clock or on dict ordering, so golden files stay byte-stable.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

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

ENVOY_PID = 4182
POD = "app/productpage-v1-6b7f"
POD_UID = "5f0c6a2e-9b1d-4c47-8f1e-2d7a3c9e4b10"
ENVOY_CONTAINER_ID = "3b6f0e1d9a7c4e2f8b5d1a0c6e9f7b3d2a4c8e1f0b9d7a6c5e3f1b2d4a6c8e0f"
ENVOY_CGROUP = (
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    + POD_UID.replace("-", "_")
    + ".slice/cri-containerd-"
    + ENVOY_CONTAINER_ID
    + ".scope"
)

#: Envoy's threads: tid -> comm.
ENVOY_THREADS: Dict[int, str] = {
    4182: "envoy",
    4185: "grpc_global_tim",
    4190: "dog:main",
    4191: "AccessLogFlush",
    4450: "wrk:worker_0",
    4451: "wrk:worker_1",
}

ENVOY = Task("envoy", ENVOY_PID, 4182)
GRPC_TIMER = Task("grpc_global_tim", ENVOY_PID, 4185)
WATCHDOG = Task("dog:main", ENVOY_PID, 4190)
ACCESS_LOG = Task("AccessLogFlush", ENVOY_PID, 4191)
WORKER_0 = Task("wrk:worker_0", ENVOY_PID, 4450)
WORKER_1 = Task("wrk:worker_1", ENVOY_PID, 4451)

KUBELET = Task("kubelet", 606, 731)
PILOT_AGENT = Task("pilot-agent", 4120, 4133)
PRODUCTPAGE = Task("gunicorn", 3990, 3990)
COREDNS = Task("coredns", 2301, 2318)
SWAPPER_0 = Task("swapper/0", 0, 0)
SWAPPER_1 = Task("swapper/1", 0, 0)
KSOFTIRQD_0 = Task("ksoftirqd/0", 14, 14)
CRUNCHER = Task("cruncher", 7311, 7315)

# --------------------------------------------------------------------------- kernel frames

_SYSCALL = ("do_syscall_64", "entry_SYSCALL_64_after_hwframe")

#: A thread asleep in epoll_wait (Envoy's event loops).
K_EPOLL_WAIT = (
    "__schedule", "schedule", "schedule_hrtimeout_range_clock", "schedule_hrtimeout_range",
    "do_epoll_wait", "__x64_sys_epoll_wait", *_SYSCALL,
)
#: A thread asleep on a futex (condition variables, mutexes).
K_FUTEX_WAIT = (
    "__schedule", "schedule", "futex_wait_queue", "__futex_wait", "futex_wait", "do_futex",
    "__x64_sys_futex", *_SYSCALL,
)
#: Preempted on return to user mode after the timer interrupt (forced).
K_PREEMPT_USER = (
    "__schedule", "schedule", "exit_to_user_mode_loop", "exit_to_user_mode_prepare",
    "irqentry_exit_to_user_mode", "irqentry_exit", "asm_sysvec_apic_timer_interrupt",
)
#: Preempted inside the kernel at an interrupt's exit (forced).
K_PREEMPT_IRQ = (
    "__schedule", "preempt_schedule_irq", "irqentry_exit", "asm_sysvec_apic_timer_interrupt",
    "_copy_to_iter", "__skb_datagram_iter", "skb_copy_datagram_iter", "tcp_recvmsg_locked",
    "tcp_recvmsg", "inet_recvmsg", "sock_recvmsg", "sock_read_iter", "do_iter_readv_writev",
    "vfs_readv", "do_readv", "__x64_sys_readv", *_SYSCALL,
)
#: Gave the CPU away at an in-kernel resched point (voluntary).
K_PREEMPT_COND = (
    "__schedule", "__cond_resched", "__release_sock", "release_sock", "tcp_sendmsg",
    "sock_write_iter", "do_iter_readv_writev", "vfs_writev", "do_writev", "__x64_sys_writev",
    *_SYSCALL,
)

#: The epoll wake chain every socket/eventfd wake of an Envoy event loop goes through.
_EP_WAKE = (
    "try_to_wake_up", "default_wake_function", "ep_autoremove_wake_function",
    "__wake_up_common", "__wake_up", "ep_poll_callback", "__wake_up_common",
)
_SOCK_READABLE = (*_EP_WAKE, "__wake_up_sync_key", "sock_def_readable")
_TCP_RX = (
    "tcp_data_ready", "tcp_data_queue", "tcp_rcv_established", "tcp_v4_do_rcv", "tcp_v4_rcv",
    "ip_protocol_deliver_rcu", "ip_local_deliver_finish", "ip_local_deliver", "ip_rcv",
)
_BACKLOG_SOFTIRQ = (
    "__netif_receive_skb_one_core", "process_backlog", "__napi_poll", "net_rx_action",
    "handle_softirqs", "do_softirq", "__local_bh_enable_ip",
)
_TCP_TX = (
    "__dev_queue_xmit", "ip_finish_output2", "ip_output", "__ip_queue_xmit",
    "__tcp_transmit_skb", "tcp_write_xmit", "__tcp_push_pending_frames", "tcp_sendmsg_locked",
    "tcp_sendmsg", "sock_write_iter", "vfs_write", "ksys_write", "__x64_sys_write", *_SYSCALL,
)
#: TCP data sent over loopback: the receive softirq runs on the sender's way out.
K_TCP_LOOPBACK = (*_SOCK_READABLE, *_TCP_RX, *_BACKLOG_SOFTIRQ, *_TCP_TX)
#: TCP data from the host over the pod's veth (kubelet's probe): same shape, veth_xmit.
K_TCP_VETH = (
    *_SOCK_READABLE, *_TCP_RX, *_BACKLOG_SOFTIRQ[:-2], "__local_bh_enable_ip",
    "__dev_queue_xmit", "ip_finish_output2", "ip_output", "__ip_queue_xmit",
    "__tcp_transmit_skb", "tcp_write_xmit", "__tcp_push_pending_frames", "tcp_sendmsg_locked",
    "tcp_sendmsg", "__sys_sendto", "__x64_sys_sendto", *_SYSCALL,
)
#: TCP data from the NIC, softirq on interrupt exit while the CPU idled (swapper).
K_TCP_IRQ_IDLE = (
    *_SOCK_READABLE, *_TCP_RX[:-1], "ip_sublist_rcv_finish", "ip_sublist_rcv", "ip_list_rcv",
    "__netif_receive_skb_list_core", "netif_receive_skb_list_internal", "napi_complete_done",
    "virtnet_poll", "__napi_poll", "net_rx_action", "handle_softirqs", "irq_exit_rcu",
    "common_interrupt", "asm_common_interrupt", "pv_native_safe_halt", "default_idle",
    "default_idle_call", "do_idle", "cpu_startup_entry", "start_secondary",
    "common_startup_64",
)
#: TCP data processed late, in ksoftirqd.
K_TCP_KSOFTIRQD = (
    *_SOCK_READABLE, *_TCP_RX[:-1], "ip_sublist_rcv_finish", "ip_sublist_rcv", "ip_list_rcv",
    "__netif_receive_skb_list_core", "netif_receive_skb_list_internal", "napi_complete_done",
    "virtnet_poll", "__napi_poll", "net_rx_action", "handle_softirqs", "run_ksoftirqd",
    "smpboot_thread_fn", "kthread", "ret_from_fork", "ret_from_fork_asm",
)
#: A DNS answer from coredns over the veth pair.
K_UDP_VETH = (
    *_SOCK_READABLE, "__udp_enqueue_schedule_skb", "udp_queue_rcv_one_skb",
    "udp_queue_rcv_skb", "udp_unicast_rcv_skb", "__udp4_lib_rcv", "udp_rcv",
    "ip_protocol_deliver_rcu", "ip_local_deliver_finish", "ip_local_deliver", "ip_rcv",
    *_BACKLOG_SOFTIRQ, "__dev_queue_xmit", "ip_finish_output2", "ip_output", "ip_send_skb",
    "udp_send_skb", "udp_sendmsg", "____sys_sendmsg", "___sys_sendmsg", "__sys_sendmsg",
    "__x64_sys_sendmsg", *_SYSCALL,
)
#: pilot-agent writes xDS/SDS over the unix socket.
K_UNIX_WRITE = (
    *_SOCK_READABLE, "unix_stream_sendmsg", "sock_write_iter", "vfs_write", "ksys_write",
    "__x64_sys_write", *_SYSCALL,
)
#: An eventfd write (libevent's cross-thread notification).
K_EVENTFD_WRITE = (
    *_EP_WAKE, "__wake_up_locked_key", "eventfd_write", "vfs_write", "ksys_write",
    "__x64_sys_write", *_SYSCALL,
)
#: A futex wake (a condition variable signal).
K_FUTEX_WAKE = (
    "try_to_wake_up", "wake_up_q", "futex_wake", "do_futex", "__x64_sys_futex", *_SYSCALL,
)
_HRTIMER_IRQ = (
    "__hrtimer_run_queues", "hrtimer_interrupt", "__sysvec_apic_timer_interrupt",
    "sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt",
)
_IDLE = (
    "pv_native_safe_halt", "default_idle", "default_idle_call", "do_idle", "cpu_startup_entry",
)
#: An epoll or futex timeout expiring in the timer interrupt of an idle CPU.
K_TIMER_IDLE_CPU1 = ("try_to_wake_up", "hrtimer_wakeup", *_HRTIMER_IRQ, *_IDLE,
                     "start_secondary", "common_startup_64")
K_TIMER_IDLE_CPU0 = ("try_to_wake_up", "hrtimer_wakeup", *_HRTIMER_IRQ, *_IDLE,
                     "rest_init", "start_kernel", "x86_64_start_reservations",
                     "x86_64_start_kernel", "common_startup_64")
#: The same timer interrupt landing while the noisy neighbour ran in user mode.
K_TIMER_IN_USER = ("try_to_wake_up", "hrtimer_wakeup", *_HRTIMER_IRQ)

# ----------------------------------------------------------------------------- user frames

_LIBC = "libc.so.6"
_THREAD_START = (
    "Envoy::Thread::PosixThreadFactory::createPthread(Envoy::Thread::ThreadHandle*)"
    "::$_0::__invoke(void*)",
    "start_thread", "__clone3",
)
_DISPATCHER_RUN = (
    "epoll_wait", "epoll_dispatch", "event_base_loop", "Envoy::Event::LibeventScheduler::run()",
    "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
)
U_WORKER_LOOP = (
    *_DISPATCHER_RUN, "Envoy::Server::WorkerImpl::threadRoutine(Envoy::Server::GuardDog&, "
    "std::function<void ()> const&)", *_THREAD_START,
)
U_MAIN_LOOP = (
    *_DISPATCHER_RUN, "Envoy::Server::InstanceBase::run()", "Envoy::MainCommonBase::run()",
    "Envoy::MainCommon::main(int, char**, std::function<void (Envoy::Server::Instance&)>)",
    "main", "__libc_start_call_main", "__libc_start_main_impl", "_start",
)
U_WATCHDOG_LOOP = (
    *_DISPATCHER_RUN, "Envoy::Server::GuardDogImpl::start(Envoy::Api::Api&)::$_0::operator()() "
    "const", *_THREAD_START,
)
U_ACCESS_LOG_WAIT = (
    "syscall", "absl::synchronization_internal::FutexImpl::WaitUntil(std::atomic<int>*, int, "
    "absl::synchronization_internal::KernelTimeout)",
    "absl::synchronization_internal::FutexWaiter::Wait(absl::synchronization_internal::"
    "KernelTimeout)", "AbslInternalPerThreadSemWait",
    "absl::CondVar::WaitCommon(absl::Mutex*, absl::synchronization_internal::KernelTimeout)",
    "absl::CondVar::WaitWithTimeout(absl::Mutex*, absl::Duration)",
    "Envoy::AccessLog::AccessLogFileImpl::flushThreadFunc()", *_THREAD_START,
)
U_GRPC_TIMER_WAIT = (
    "syscall", "gpr_cv_wait", "grpc_core::(anonymous namespace)::ThreadState::ThreadMain()",
    "grpc_core::(anonymous namespace)::ThreadInternalsPosix::ThreadInternalsPosix(char const*, "
    "void (*)(void*), void*, bool*, grpc_core::Thread::Options const&)::{lambda(void*)#1}"
    "::_FUN(void*)", "start_thread", "__clone3",
)
U_WORKER_WRITEV = (
    "writev", "Envoy::Network::IoSocketHandleImpl::writev(Envoy::Buffer::RawSlice const*, "
    "unsigned long)", "Envoy::Network::RawBufferSocket::doWrite(Envoy::Buffer::Instance&, bool)",
    "Envoy::Network::ConnectionImpl::onWriteReady()",
    "Envoy::Network::ConnectionImpl::onFileEvent(unsigned int)",
    "Envoy::Event::FileEventImpl::assignEvents(unsigned int, event_base*)::$_1::__invoke(int, "
    "short, void*)", "event_process_active_single_queue", "event_base_loop",
    "Envoy::Event::LibeventScheduler::run()",
    "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
    "Envoy::Server::WorkerImpl::threadRoutine(Envoy::Server::GuardDog&, "
    "std::function<void ()> const&)", *_THREAD_START,
)
U_WORKER_READV = ("readv", *U_WORKER_WRITEV[1:])
U_WORKER_HTTP = (
    "Envoy::Http::HeaderMapImpl::addCopy(Envoy::Http::LowerCaseString const&, "
    "std::basic_string_view<char, std::char_traits<char> >)",
    "Envoy::Http::Http1::ServerConnectionImpl::onHeadersCompleteBase()",
    "Envoy::Http::Http1::ConnectionImpl::onHeadersComplete()",
    "Envoy::Http::Http1::LegacyHttpParserImpl::Impl::Impl(http_parser_type, void*)::$_7"
    "::__invoke(http_parser*)", "http_parser_execute",
    "Envoy::Http::Http1::ConnectionImpl::dispatchSlice(char const*, unsigned long)",
    "Envoy::Http::Http1::ConnectionImpl::dispatch(Envoy::Buffer::Instance&)",
    "Envoy::Http::ConnectionManagerImpl::onData(Envoy::Buffer::Instance&, bool)",
    "Envoy::Network::FilterManagerImpl::onContinueReading(Envoy::Network::FilterManagerImpl"
    "::ActiveReadFilter*, Envoy::Network::ReadBufferSource&)",
    "Envoy::Network::ConnectionImpl::onReadReady()",
    "Envoy::Network::ConnectionImpl::onFileEvent(unsigned int)",
    "event_process_active_single_queue", "event_base_loop",
    "Envoy::Event::LibeventScheduler::run()",
    "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
    "Envoy::Server::WorkerImpl::threadRoutine(Envoy::Server::GuardDog&, "
    "std::function<void ()> const&)", *_THREAD_START,
)

_POST = (
    "write", "evthread_notify_base_eventfd", "evthread_notify_base", "event_active_nolock_",
    "event_active", "Envoy::Event::SchedulableCallbackImpl::scheduleCallbackNextIteration()",
    "Envoy::Event::DispatcherImpl::post(std::function<void ()>)",
)
#: The main thread fans a cluster update out to every worker (xDS push).
U_POST_CLUSTER_UPDATE = (
    *_POST,
    "Envoy::ThreadLocal::InstanceImpl::runOnAllThreads(std::function<void ()>)",
    "Envoy::ThreadLocal::InstanceImpl::SlotImpl::runOnAllThreads(std::function<void "
    "(Envoy::OptRef<Envoy::ThreadLocal::ThreadLocalObject>)> const&)",
    "Envoy::Upstream::ClusterManagerImpl::postThreadLocalClusterUpdate(Envoy::Upstream"
    "::ClusterManagerCluster&, Envoy::Upstream::ThreadLocalClusterUpdateParams&&)",
    "Envoy::Upstream::ClusterManagerImpl::onClusterInit(Envoy::Upstream::ClusterManagerCluster&)",
    "Envoy::Config::GrpcMuxImpl::onDiscoveryResponse(std::unique_ptr<envoy::service::discovery"
    "::v3::DiscoveryResponse>, Envoy::Config::ControlPlaneStats&)",
    "Envoy::Grpc::AsyncStreamImpl::onData(Envoy::Buffer::Instance&, bool)",
    "Envoy::Http::AsyncStreamImpl::encodeData(Envoy::Buffer::Instance&, bool)",
    "Envoy::Network::ConnectionImpl::onReadReady()",
    "Envoy::Network::ConnectionImpl::onFileEvent(unsigned int)",
    "event_process_active_single_queue", "event_base_loop",
    "Envoy::Event::LibeventScheduler::run()",
    "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
    "Envoy::Server::InstanceBase::run()", "Envoy::MainCommonBase::run()", "main",
    "__libc_start_call_main", "__libc_start_main_impl", "_start",
)
#: The main thread's periodic stats flush merges histograms on every worker.
U_POST_STATS_MERGE = (
    *_POST,
    "Envoy::ThreadLocal::InstanceImpl::runOnAllThreads(std::function<void ()>, "
    "std::function<void ()>)",
    "Envoy::Stats::ThreadLocalStoreImpl::mergeHistograms(std::function<void ()>)",
    "Envoy::Server::InstanceBase::flushStats()",
    "Envoy::Event::TimerImpl::TimerImpl(std::unique_ptr<event_base, Envoy::CSmartPtr"
    "<event_base, &event_base_free> >&, std::function<void ()>, Envoy::Event::Dispatcher&)"
    "::$_0::__invoke(int, short, void*)",
    "event_process_active_single_queue", "event_base_loop",
    "Envoy::Event::LibeventScheduler::run()",
    "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
    "Envoy::Server::InstanceBase::run()", "Envoy::MainCommonBase::run()", "main",
    "__libc_start_call_main", "__libc_start_main_impl", "_start",
)
#: A worker signals the access-log flush thread when its buffer fills.
U_ACCESS_LOG_SIGNAL = (
    "syscall", "absl::synchronization_internal::FutexImpl::Wake(std::atomic<int>*, int)",
    "absl::synchronization_internal::FutexWaiter::Post()", "AbslInternalPerThreadSemPost",
    "absl::CondVar::Wakeup(absl::base_internal::PerThreadSynch*)", "absl::CondVar::Signal()",
    "Envoy::AccessLog::AccessLogFileImpl::write(std::basic_string_view<char, "
    "std::char_traits<char> >)",
    "Envoy::Extensions::AccessLoggers::File::FileAccessLog::emitLog(Envoy::Formatter"
    "::HttpFormatterContext const&, Envoy::StreamInfo::StreamInfo const&)",
    "Envoy::AccessLog::ImplBase::log(Envoy::Formatter::HttpFormatterContext const&, "
    "Envoy::StreamInfo::StreamInfo const&)",
    "Envoy::Http::FilterManager::log(Envoy::AccessLog::AccessLogType)",
    "Envoy::Http::ConnectionManagerImpl::doDeferredStreamDestroy(Envoy::Http"
    "::ConnectionManagerImpl::ActiveStream&)",
    "Envoy::Event::DispatcherImpl::clearDeferredDeleteList()",
    "event_process_active_single_queue", "event_base_loop",
    "Envoy::Event::LibeventScheduler::run()",
    "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
    "Envoy::Server::WorkerImpl::threadRoutine(Envoy::Server::GuardDog&, "
    "std::function<void ()> const&)", *_THREAD_START,
)
U_KUBELET_PROBE = (
    "runtime/internal/syscall.Syscall6", "syscall.Syscall", "syscall.write",
    "internal/poll.(*FD).Write", "net.(*netFD).Write", "net.(*conn).Write",
    "net/http.persistConnWriter.Write", "bufio.(*Writer).Flush",
    "net/http.(*persistConn).writeLoop", "runtime.goexit",
)
U_PILOT_AGENT_XDS = (
    "runtime/internal/syscall.Syscall6", "syscall.Syscall", "syscall.write",
    "internal/poll.(*FD).Write", "net.(*netFD).Write", "net.(*conn).Write",
    "google.golang.org/grpc/internal/transport.(*bufWriter).Flush",
    "google.golang.org/grpc/internal/transport.(*loopyWriter).run",
    "google.golang.org/grpc/internal/transport.newHTTP2Server.func6", "runtime.goexit",
)
U_COREDNS_ANSWER = (
    "runtime/internal/syscall.Syscall6", "syscall.Syscall", "syscall.sendmsg",
    "syscall.sendmsgN", "internal/poll.(*FD).WriteMsgInet4", "net.(*netFD).writeMsgInet4",
    "net.(*UDPConn).writeMsgAddrPort", "net.(*UDPConn).WriteMsgUDPAddrPort",
    "github.com/miekg/dns.WriteToSessionUDP", "github.com/miekg/dns.(*response).Write",
    "github.com/coredns/coredns/plugin/cache.(*ResponseWriter).WriteMsg",
    "github.com/miekg/dns.(*Server).serveDNS", "github.com/miekg/dns.(*Server).serveUDPPacket",
    "runtime.goexit",
)
U_GUNICORN_SEND = (
    "__libc_send", "sock_sendall", "method_vectorcall_VARARGS",
    "_PyEval_EvalFrameDefault", "_PyFunction_Vectorcall", "_PyEval_EvalFrameDefault",
    "PyEval_EvalCode", "run_mod", "_PyRun_SimpleFileObject", "Py_RunMain", "main",
)
U_CRUNCHER = (
    "crunch::sha256_block(unsigned int*, unsigned char const*, unsigned long)",
    "crunch::Worker::hashChunk(crunch::Chunk const&)", "crunch::Worker::run()",
    "start_thread", "__clone3",
)


# --------------------------------------------------------------------------------- builder

def _stack(rec: Recording, kernel: Sequence[str], user: Sequence[str] = (),
           missing: Optional[str] = None) -> Stack:
    return rec.stacks.intern(list(kernel) + list(user), kernel_depth=len(kernel),
                             missing=missing)


def _wake(rec: Recording, target: Task, target_stack: Stack, waker: Task, waker_stack: Stack,
          count: int, avg_us: int, max_us: int, runq_us: int) -> None:
    """A woken edge: ``count`` sleeps of ``avg_us`` each, ``runq_us`` of it run-queue wait."""
    total = count * avg_us
    rec.edges.append(Edge(
        target=target, target_stack=target_stack, waker=waker, waker_stack=waker_stack,
        total_us=total, count=count, max_us=max_us, blocked_us=total - runq_us,
        runq_us=runq_us,
    ))


def _preempt(rec: Recording, target: Task, target_stack: Stack, by: Optional[Task],
             count: int, avg_us: int, max_us: int) -> None:
    total = count * avg_us
    rec.edges.append(Edge(
        target=target, target_stack=target_stack, waker=None, waker_stack=None,
        total_us=total, count=count, max_us=max_us, blocked_us=0, runq_us=total,
        preempted=True, preempted_by=by,
    ))


def _processes() -> List[ProcessInfo]:
    return [
        ProcessInfo(ENVOY_PID, "envoy", cgroup=ENVOY_CGROUP, container_id=ENVOY_CONTAINER_ID,
                    exe="/usr/local/bin/envoy", threads=dict(ENVOY_THREADS), pod=POD,
                    container="istio-proxy", pod_uid=POD_UID,
                    runtime="containerd", node="worker-2"),
        ProcessInfo(4120, "pilot-agent", cgroup=ENVOY_CGROUP, container_id=ENVOY_CONTAINER_ID,
                    exe="/usr/local/bin/pilot-agent", threads={4120: "pilot-agent",
                                                               4133: "pilot-agent"},
                    pod=POD, container="istio-proxy", pod_uid=POD_UID,
                    runtime="containerd", node="worker-2"),
        ProcessInfo(3990, "gunicorn",
                    cgroup=ENVOY_CGROUP.replace(ENVOY_CONTAINER_ID, "9d1e" + "7" * 60),
                    container_id="9d1e" + "7" * 60, exe="/usr/local/bin/python3.12",
                    threads={3990: "gunicorn"}, pod=POD, container="productpage",
                    pod_uid=POD_UID, runtime="containerd", node="worker-2"),
        ProcessInfo(606, "kubelet", cgroup="/system.slice/kubelet.service",
                    exe="/usr/bin/kubelet", threads={606: "kubelet", 731: "kubelet"},
                    node="worker-2"),
        ProcessInfo(2301, "coredns",
                    cgroup="/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                    "8a41c2d0_7e35_4b6f_9c12_0f5e8d3a6b71.slice/cri-containerd-"
                    "c0ffee12" + "3" * 56 + ".scope",
                    container_id="c0ffee12" + "3" * 56, runtime="containerd",
                    pod_uid="8a41c2d0-7e35-4b6f-9c12-0f5e8d3a6b71", exe="/coredns",
                    threads={2301: "coredns", 2318: "coredns"},
                    pod="kube-system/coredns-5d78c", container="coredns", node="worker-2"),
        ProcessInfo(7311, "cruncher",
                    cgroup="/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
                    "e2b7d9a4_1c6f_48e0_b3a5_7f9d0c2e4a16.slice/cri-containerd-"
                    "badc0de5" + "1" * 56 + ".scope",
                    container_id="badc0de5" + "1" * 56, runtime="containerd",
                    pod_uid="e2b7d9a4-1c6f-48e0-b3a5-7f9d0c2e4a16", exe="/app/cruncher",
                    threads={7311: "cruncher", 7315: "cruncher"},
                    pod="batch/cruncher-7d9", container="cruncher", node="worker-2"),
        ProcessInfo(0, "swapper/1", kernel_thread=True, threads={0: "swapper/1"},
                    node="worker-2"),
        ProcessInfo(14, "ksoftirqd/0", kernel_thread=True, threads={14: "ksoftirqd/0"},
                    node="worker-2"),
    ]


def build_sample_recording() -> Recording:
    """A fresh Recording (callers may mutate it) of the sample Envoy trace."""
    rec = Recording()
    # The keys a recording's hello/target/end records give (see importers/builder.py).
    rec.source = {
        "schema": 1,
        "tool_version": "0.1.0",
        "collector": "bcc",
        "bcc_version": "0.29.1",
        "python": "3.11.2",
        "kernel": "6.6.58-talos",
        "node": "worker-2",
        "started": 1764255600.0,  # 2025-11-27T15:00:00Z, fixed for byte-stable output
        "duration_s": 30.0,
        "interval_s": 5.0,
        "headers": {"source": "fallback", "path": "bundled 6.6 headers"},
        "kind": "offwake",
        "target_by": "pod",
        "elapsed_s": 30.0,
        "end_reason": "duration",
    }
    for info in _processes():
        rec.processes[info.pid] = info
    rec.targets.append(rec.processes[ENVOY_PID])

    worker_wait = _stack(rec, K_EPOLL_WAIT, U_WORKER_LOOP)
    main_wait = _stack(rec, K_EPOLL_WAIT, U_MAIN_LOOP)
    dog_wait = _stack(rec, K_EPOLL_WAIT, U_WATCHDOG_LOOP)
    log_wait = _stack(rec, K_FUTEX_WAIT, U_ACCESS_LOG_WAIT)
    grpc_wait = _stack(rec, K_FUTEX_WAIT, U_GRPC_TIMER_WAIT)

    gunicorn_tx = _stack(rec, K_TCP_LOOPBACK, U_GUNICORN_SEND)
    kubelet_tx = _stack(rec, K_TCP_VETH, U_KUBELET_PROBE)
    nic_idle = _stack(rec, K_TCP_IRQ_IDLE)
    nic_ksoftirqd = _stack(rec, K_TCP_KSOFTIRQD)
    dns_answer = _stack(rec, K_UDP_VETH, U_COREDNS_ANSWER)
    xds_write = _stack(rec, K_UNIX_WRITE, U_PILOT_AGENT_XDS)
    post_cluster = _stack(rec, K_EVENTFD_WRITE, U_POST_CLUSTER_UPDATE)
    post_stats = _stack(rec, K_EVENTFD_WRITE, U_POST_STATS_MERGE)
    log_signal = _stack(rec, K_FUTEX_WAKE, U_ACCESS_LOG_SIGNAL)
    timer_cpu0 = _stack(rec, K_TIMER_IDLE_CPU0)
    timer_cpu1 = _stack(rec, K_TIMER_IDLE_CPU1)
    timer_in_cruncher = _stack(rec, K_TIMER_IN_USER, U_CRUNCHER)
    preempt_user = _stack(rec, K_PREEMPT_USER, U_WORKER_HTTP)
    preempt_irq = _stack(rec, K_PREEMPT_IRQ, U_WORKER_READV)
    preempt_cond = _stack(rec, K_PREEMPT_COND, U_WORKER_WRITEV)
    main_preempt = _stack(rec, K_PREEMPT_USER, (), missing="user")

    for worker, share in ((WORKER_0, 1.0), (WORKER_1, 0.55)):
        def n(x: int, share: float = share) -> int:
            return max(1, int(x * share))
        # Requests from the app container arrive over loopback.
        _wake(rec, worker, worker_wait, PRODUCTPAGE, gunicorn_tx,
              n(4120), 2150, 88_400, n(4120) * 9)
        # kubelet's readiness probe on :15021 over the veth pair.
        _wake(rec, worker, worker_wait, KUBELET, kubelet_tx, n(30), 9_800, 31_200, n(30) * 14)
        # Inbound traffic from other nodes: softirq on interrupt exit of an idle CPU ...
        _wake(rec, worker, worker_wait, SWAPPER_1, nic_idle, n(1480), 3_020, 64_000,
              n(1480) * 11)
        # ... and some deferred to ksoftirqd under load.
        _wake(rec, worker, worker_wait, KSOFTIRQD_0, nic_ksoftirqd, n(212), 2_870, 41_500,
              n(212) * 38)
        # The main thread's cross-thread posts: xDS cluster updates and stats merges.
        _wake(rec, worker, worker_wait, ENVOY, post_cluster, 96, 4_410, 19_800, 96 * 21)
        _wake(rec, worker, worker_wait, ENVOY, post_stats, 6, 120_400, 410_000, 6 * 17)
        # Idle event loops wake on their own timers.
        _wake(rec, worker, worker_wait, SWAPPER_1, timer_cpu1, n(290), 7_600, 50_000, n(290) * 4)
        _wake(rec, worker, worker_wait, CRUNCHER, timer_in_cruncher, n(64), 7_350, 50_000,
              n(64) * 610)

    # Workers 1's event loop shares CPU 1 with the noisy neighbour.
    _preempt(rec, WORKER_1, preempt_user, CRUNCHER, 418, 4_530, 27_900)
    _preempt(rec, WORKER_1, preempt_irq, CRUNCHER, 57, 3_940, 16_300)
    _preempt(rec, WORKER_0, preempt_user, CRUNCHER, 61, 2_280, 9_700)
    _preempt(rec, WORKER_0, preempt_cond, KUBELET, 12, 1_150, 3_100)
    _preempt(rec, ENVOY, main_preempt, None, 9, 880, 2_400)

    # Main thread: xDS over the unix socket from pilot-agent, DNS answers from coredns.
    _wake(rec, ENVOY, main_wait, PILOT_AGENT, xds_write, 188, 61_200, 1_840_000, 188 * 12)
    _wake(rec, ENVOY, main_wait, COREDNS, dns_answer, 1_142, 9_600, 96_000, 1_142 * 8)
    _wake(rec, ENVOY, main_wait, SWAPPER_0, timer_cpu0, 410, 11_800, 100_300, 410 * 5)
    _wake(rec, ENVOY, main_wait, KUBELET, kubelet_tx, 30, 3_100, 7_800, 30 * 11)

    # Watchdog and gRPC timer threads tick; the access-log flusher waits on a condvar.
    _wake(rec, WATCHDOG, dog_wait, SWAPPER_0, timer_cpu0, 150, 199_700, 200_900, 150 * 6)
    _wake(rec, GRPC_TIMER, grpc_wait, SWAPPER_1, timer_cpu1, 31, 967_000, 1_000_400, 31 * 7)
    _wake(rec, ACCESS_LOG, log_wait, WORKER_0, log_signal, 211, 55_400, 410_000, 211 * 13)
    _wake(rec, ACCESS_LOG, log_wait, WORKER_1, log_signal, 97, 95_000, 505_000, 97 * 12)
    _wake(rec, ACCESS_LOG, log_wait, SWAPPER_0, timer_cpu0, 8, 1_000_200, 1_000_900, 8 * 9)

    rec.oncpu = [
        OnCpu(ENVOY, 2_372, 1_486_000, 18_700, [310, 402, 488, 521, 317, 166, 92, 51, 17, 6,
                                                1, 0, 0, 0, 1]),
        OnCpu(WORKER_0, 8_050, 4_931_000, 9_900, [402, 1_130, 2_210, 2_306, 1_154, 501, 222,
                                                  91, 27, 6, 1]),
        # One 48 ms run, and 61 ms of CPU between two sleeps (the cruncher cut it up):
        # worker 1's event loop stalled on its own work.
        OnCpu(WORKER_1, 5_020, 6_804_000, 48_213, [188, 601, 1_205, 1_378, 874, 431, 209, 88,
                                                   31, 9, 3, 1, 0, 0, 0, 2], 61_870),
        OnCpu(WATCHDOG, 150, 3_900, 61, [0, 12, 44, 61, 30, 2, 1]),
        OnCpu(ACCESS_LOG, 332, 211_000, 2_950, [0, 0, 4, 17, 51, 96, 88, 49, 20, 6, 1, 0]),
        OnCpu(GRPC_TIMER, 31, 420, 33, [2, 6, 11, 9, 2, 1]),
    ]
    # Who had CPU 1 while the workers waited to run: mostly the cruncher.
    rec.queued = [
        Queued(WORKER_1, CRUNCHER, 1_310, 2_480_000, 27_900),
        Queued(WORKER_1, WORKER_0, 402, 231_000, 6_100),
        Queued(WORKER_1, None, 2_050, 41_000, 310),
        Queued(WORKER_0, CRUNCHER, 212, 402_000, 9_700),
        Queued(WORKER_0, KUBELET, 12, 13_800, 3_100),
        Queued(ENVOY, WORKER_1, 88, 61_000, 2_400),
    ]
    # What Envoy counted over the trace, and its listening sockets.
    rec.envoy_stats = [
        EnvoyStats(ENVOY_PID, "127.0.0.1:15000", 30.4, {
            "listener.0.0.0.0_15006.downstream_cx_total": 35,
            "listener.0.0.0.0_15006.worker_0.downstream_cx_total": 19,
            "listener.0.0.0.0_15006.worker_1.downstream_cx_total": 16,
            "listener.0.0.0.0_15021.downstream_cx_total": 30,
            "listener.admin.downstream_cx_total": 1,
            "dns.cares.resolve_total": 1_150,
            "cluster.outbound|9080||reviews.bookinfo.svc.cluster.local.update_attempt": 1_150,
            "cluster_manager.cds.update_success": 190,
            "filesystem.flushed_by_timer": 3,
        }, {"0.0.0.0:15006": 2, "0.0.0.0:15021": 2, "127.0.0.1:15000": 1}),
    ]
    rec.pending = [
        Pending(ACCESS_LOG, 642_000, log_wait),
        Pending(WORKER_1, 3_800, preempt_user, preempted=True),
    ]
    rec.throttling = [
        Throttling(ENVOY_PID, ENVOY_CGROUP,
                   start={"nr_periods": 421_337, "nr_throttled": 1_203,
                          "throttled_usec": 48_211_004},
                   end={"nr_periods": 421_637, "nr_throttled": 1_220,
                        "throttled_usec": 48_562_318}),
    ]
    rec.totals = {"switches": 41_382, "wakeups": 23_507, "edges": len(rec.edges)}
    rec.lost = {"stack_eexist": 37, "stack_enomem": 0, "map_full": 0}
    rec.warnings = [
        "37 stack(s) were lost to hash collisions (stack_eexist); raise --stack-storage-size",
    ]
    return rec


def build_odd_recording() -> Recording:
    """A small recording with the awkward cases renderers must survive.

    Frame names with ``;`` and a line break, a stack whose kernel/user boundary is unknown
    (BCC text without ``-d``), halves the tracer missed, a preemption with no preemptor, a
    waker with no pid, an edge with no time, and no counts or blocked/run-queue split (as
    BCC's output has none).
    """
    rec = Recording()
    rec.source = {"kind": "offwaketime-folded", "input": "odd.folded", "delimited": True}
    worker = Task("wrk:worker_0", None, None)
    envoy = Task("envoy", None, None)
    target = rec.stacks.intern(
        ["__schedule", "schedule", "do_epoll_wait", "epoll_wait",
         "std::function<void ()>::operator()() const;with;semicolons",
         "Envoy::Something\nwith a newline"], kernel_depth=3)
    no_user = rec.stacks.intern(["__schedule", "schedule", "do_epoll_wait"], kernel_depth=3,
                                missing="user")
    unknown_split = rec.stacks.intern(
        ["try_to_wake_up", "ep_poll_callback", "eventfd_write", "write",
         "Envoy::Event::DispatcherImpl::post(std::function<void ()>)"], kernel_depth=None)
    no_kernel = rec.stacks.intern(["write", "main"], kernel_depth=0, missing="kernel")
    preempt = rec.stacks.intern(
        ["__schedule", "preempt_schedule_irq", "irqentry_exit",
         "asm_sysvec_apic_timer_interrupt"], kernel_depth=4)
    rec.edges = [
        Edge(worker, target, envoy, unknown_split, total_us=5_000),
        Edge(worker, no_user, Task("mystery", None, None), no_kernel, total_us=1_200),
        Edge(worker, target, envoy, unknown_split, total_us=0),
        Edge(envoy, preempt, None, None, total_us=700, preempted=True),
        Edge(Task("envoy", None, None), no_user, envoy, unknown_split, total_us=300),
    ]
    return rec
