"""The classifier on realistic stacks: every category, every cause, several kernels.

Stacks are written leaf first, as the kernel's unwinder returns them, from what these
code paths look like on 6.x kernels (plus 4.x/5.x variants where names differ). The same
cases are also rendered as BCC offwaketime text and folded captures under
tests/data/classify/ and run through the importers (test_classify_bcc.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import pytest

from kubectl_offwake.analysis.categories import CATEGORY_BY_ID, CAUSES
from kubectl_offwake.analysis.classify import Classifier, comm_kind
from kubectl_offwake.analysis.frames import normalize
from kubectl_offwake.analysis.model import Stack
from kubectl_offwake.analysis.rules import RULES, TARGET, WAKER

F = Tuple[str, ...]

# -- fragments ---------------------------------------------------------------------------
# The wake itself, as seen from the sched_waking tracepoint (epoll waiter woken through
# ep_poll_callback, the usual case for an Envoy thread in epoll_wait).
EP_WAKE: F = ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common",
              "__wake_up_common_lock", "__wake_up", "ep_poll_callback", "__wake_up_common",
              "__wake_up_common_lock", "__wake_up_sync_key")
SYSCALL: F = ("do_syscall_64", "entry_SYSCALL_64_after_hwframe")

# Receive path from IP up (below it: the wake, above it: how softirq was entered).
IP_RX_V4: F = ("tcp_v4_do_rcv", "tcp_v4_rcv", "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
               "ip_local_deliver", "ip_rcv_finish", "ip_rcv", "__netif_receive_skb_one_core",
               "__netif_receive_skb", "process_backlog", "__napi_poll", "net_rx_action")
UDP_RX_V4: F = ("sock_def_readable", "__udp_enqueue_schedule_skb", "udp_queue_rcv_one_skb",
                "udp_queue_rcv_skb", "udp_unicast_rcv_skb", "__udp4_lib_rcv", "udp_rcv",
                "ip_protocol_deliver_rcu", "ip_local_deliver_finish", "ip_local_deliver",
                "ip_rcv_finish", "ip_rcv", "__netif_receive_skb_one_core", "process_backlog",
                "__napi_poll", "net_rx_action")
# Softirq run by the sender on its way out of a loopback/veth transmit (cause: waker).
TX_LOOPBACK_TCP: F = ("handle_softirqs", "do_softirq", "__local_bh_enable_ip", "__dev_queue_xmit",
                      "ip_finish_output2", "__ip_finish_output", "ip_finish_output", "ip_output",
                      "ip_local_out", "__ip_queue_xmit", "__tcp_transmit_skb", "tcp_write_xmit",
                      "__tcp_push_pending_frames", "tcp_sendmsg_locked", "tcp_sendmsg",
                      "sock_sendmsg", "sock_write_iter", "vfs_write", "ksys_write",
                      "__x64_sys_write") + SYSCALL
TX_VETH_UDP: F = ("handle_softirqs", "do_softirq", "__local_bh_enable_ip", "__dev_queue_xmit",
                  "ip_finish_output2", "ip_output", "ip_send_skb", "udp_send_skb", "udp_sendmsg",
                  "__sys_sendto", "__x64_sys_sendto") + SYSCALL
# Softirq entered on the exit of a NIC interrupt that hit a busy process (cause: interrupt).
NIC_IRQ_EXIT: F = ("handle_softirqs", "__irq_exit_rcu", "irq_exit_rcu", "common_interrupt",
                   "asm_common_interrupt")
# ... or the idle task.
IDLE: F = ("cpuidle_enter_state", "cpuidle_enter", "cpuidle_idle_call", "do_idle",
           "cpu_startup_entry", "start_secondary", "secondary_startup_64_no_verify")
APIC_TIMER: F = ("hrtimer_interrupt", "__sysvec_apic_timer_interrupt",
                 "sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt")
KSOFTIRQD: F = ("handle_softirqs", "run_ksoftirqd", "smpboot_thread_fn", "kthread",
                "ret_from_fork", "ret_from_fork_asm")

# Target stacks.
T_EPOLL: F = ("__schedule", "schedule", "schedule_hrtimeout_range_clock", "do_epoll_wait",
              "__x64_sys_epoll_wait") + SYSCALL
T_EPOLL_BCC: F = ("finish_task_switch.isra.0", "__schedule", "schedule",
                  "schedule_hrtimeout_range_clock", "ep_poll", "do_epoll_wait",
                  "__x64_sys_epoll_wait") + SYSCALL
T_FUTEX: F = ("__schedule", "schedule", "futex_wait_queue", "__futex_wait", "futex_wait",
              "do_futex", "__x64_sys_futex") + SYSCALL
T_FUTEX_4X: F = ("__schedule", "schedule", "futex_wait_queue_me", "futex_wait", "do_futex",
                 "SyS_futex", "do_syscall_64", "entry_SYSCALL_64_after_hwframe")
T_NANOSLEEP: F = ("__schedule", "schedule", "do_nanosleep", "hrtimer_nanosleep",
                  "common_nsleep", "__x64_sys_clock_nanosleep") + SYSCALL
T_SELECT: F = ("__schedule", "schedule", "schedule_hrtimeout_range_clock", "poll_schedule_timeout",
               "do_select", "core_sys_select", "__x64_sys_select") + SYSCALL
T_READ: F = ("__schedule", "schedule", "pipe_read", "vfs_read", "ksys_read",
             "__x64_sys_read") + SYSCALL
T_WAIT4: F = ("__schedule", "schedule", "do_wait", "kernel_wait4", "__do_sys_wait4",
              "__x64_sys_wait4") + SYSCALL
T_SIGSUSPEND: F = ("__schedule", "schedule", "sigsuspend", "__x64_sys_rt_sigsuspend") + SYSCALL
T_IO: F = ("__schedule", "schedule", "io_schedule", "bit_wait_io", "__wait_on_bit",
           "out_of_line_wait_on_bit", "__wait_on_buffer", "ext4_read_bh") + SYSCALL
T_MUTEX: F = ("__schedule", "schedule", "schedule_preempt_disabled", "__mutex_lock.constprop.0",
              "pipe_write", "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL
U_WORKER: F = ("epoll_wait", "epoll_dispatch", "event_base_loop",
               "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
               "Envoy::Server::WorkerImpl::threadRoutine(Envoy::Server::GuardDog&, "
               "std::function<void ()> const&)", "start_thread")
U_BUSY: F = ("Envoy::Http::HeaderMapImpl::addCopy(Envoy::Http::LowerCaseString const&)",
             "http_parser_execute", "event_base_loop", "start_thread")


@dataclass(frozen=True)
class Case:
    """One wakeup: stacks leaf first, and what it must be classified as.

    ``value`` (the off-CPU µs) is unique per case: the BCC captures identify edges by it.
    """

    name: str
    value: int
    waker_comm: Optional[str]  # None: no waker (a preemption)
    waker_kernel: F
    waker_user: F
    target_comm: str
    target_kernel: F
    target_user: F
    category: str
    cause: str
    detail: Optional[str] = None
    preempted: bool = False

    def waker_stack(self) -> Optional[Stack]:
        if self.waker_comm is None:
            return None
        return Stack(self.waker_kernel + self.waker_user, len(self.waker_kernel))

    def target_stack(self) -> Stack:
        return Stack(self.target_kernel + self.target_user, len(self.target_kernel))


CASES: Tuple[Case, ...] = (
    # --- preemptions ----------------------------------------------------------------------
    Case("preempt-return-to-user-6x", 1001, None, (), (), "wrk:worker_1",
         ("__schedule", "schedule", "exit_to_user_mode_loop", "exit_to_user_mode_prepare",
          "irqentry_exit_to_user_mode", "irqentry_exit", "sysvec_apic_timer_interrupt",
          "asm_sysvec_apic_timer_interrupt"), U_BUSY,
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-irq-in-kernel-6x", 1002, None, (), (), "wrk:worker_0",
         ("__schedule", "preempt_schedule_irq", "irqentry_exit", "asm_sysvec_reschedule_ipi",
          "copy_user_enhanced_fast_string", "_copy_to_iter", "tcp_recvmsg_locked",
          "tcp_recvmsg", "inet_recvmsg", "sock_read_iter", "vfs_read", "ksys_read",
          "__x64_sys_read") + SYSCALL, U_BUSY,
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-return-to-user-4x", 1003, None, (), (), "wrk:worker_0",
         ("__schedule", "schedule", "exit_to_usermode_loop", "prepare_exit_to_usermode",
          "swapgs_restore_regs_and_return_to_usermode"), U_BUSY,
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-bcc-finish-task-switch", 1004, None, (), (), "envoy",
         ("finish_task_switch.isra.0", "__schedule", "schedule", "exit_to_user_mode_loop",
          "exit_to_user_mode_prepare", "syscall_exit_to_user_mode", "do_syscall_64",
          "entry_SYSCALL_64_after_hwframe"), ("__write",),
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-arm64-return-to-user", 1010, None, (), (), "wrk:worker_1",
         ("__schedule", "schedule", "do_notify_resume", "el0_interrupt",
          "__el0_irq_handler_common", "el0t_64_irq_handler", "el0t_64_irq"), U_BUSY,
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-arm64-in-kernel", 1011, None, (), (), "wrk:worker_0",
         ("__schedule", "preempt_schedule_irq", "arm64_preempt_schedule_irq", "el1_interrupt",
          "el1h_64_irq_handler", "el1h_64_irq", "__arch_copy_to_user", "_copy_to_iter",
          "tcp_recvmsg_locked", "tcp_recvmsg", "inet_recvmsg", "sock_read_iter", "vfs_read",
          "ksys_read", "__arm64_sys_read", "invoke_syscall", "el0_svc_common", "do_el0_svc",
          "el0_svc", "el0t_64_sync_handler", "el0t_64_sync"), U_BUSY,
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-unrecognised-frames", 1005, None, (), (), "wrk:worker_1",
         ("some_unknown_function", "another_one"), (),
         "preempted-involuntary", "none", preempted=True),
    Case("preempt-cond-resched-6x", 1006, None, (), (), "wrk:worker_0",
         ("__schedule", "__cond_resched", "__alloc_pages", "alloc_pages_mpol", "folio_alloc",
          "shmem_alloc_folio", "shmem_get_folio_gfp", "shmem_write_begin",
          "generic_perform_write", "shmem_file_write_iter", "vfs_write", "ksys_write",
          "__x64_sys_write") + SYSCALL, ("__write",),
         "preempted-voluntary", "none", preempted=True),
    Case("preempt-cond-resched-4x", 1007, None, (), (), "wrk:worker_0",
         ("__schedule", "preempt_schedule_common", "_cond_resched", "__kmalloc_node_track_caller",
          "__alloc_skb", "sk_stream_alloc_skb", "tcp_sendmsg_locked", "tcp_sendmsg",
          "sock_sendmsg", "sock_write_iter", "__vfs_write", "vfs_write", "SyS_write",
          "do_syscall_64", "entry_SYSCALL_64_after_hwframe"), ("__write",),
         "preempted-voluntary", "none", preempted=True),
    Case("preempt-schedule-on-preempt-enable", 1008, None, (), (), "wrk:worker_1",
         ("__schedule", "preempt_schedule_common", "preempt_schedule_thunk",
          "_raw_spin_unlock_bh", "release_sock", "tcp_sendmsg", "sock_sendmsg") + SYSCALL,
         ("__write",), "preempted-involuntary", "none", preempted=True),
    Case("preempt-sched-yield", 1009, None, (), (), "wrk:worker_1",
         ("__schedule", "schedule", "do_sched_yield", "__x64_sys_sched_yield") + SYSCALL,
         ("sched_yield",), "preempted-voluntary", "none", "sched_yield", preempted=True),

    # --- unix sockets ----------------------------------------------------------------------
    Case("unix-xds-from-pilot-agent", 2001, "pilot-agent",
         EP_WAKE + ("sock_def_readable", "unix_stream_sendmsg", "sock_sendmsg",
                    "sock_write_iter", "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL,
         ("syscall.Syscall", "syscall.write", "internal/poll.(*FD).Write",
          "net.(*netFD).Write", "net.(*conn).Write",
          "google.golang.org/grpc/internal/transport.(*bufWriter).Flush"),
         "envoy", T_EPOLL_BCC, U_WORKER, "unix-socket", "waker"),
    Case("unix-dgram-4x", 2002, "pilot-agent",
         ("try_to_wake_up", "default_wake_function", "autoremove_wake_function",
          "__wake_up_common", "__wake_up_common_lock", "__wake_up_sync_key", "sock_def_readable",
          "unix_dgram_sendmsg", "sock_sendmsg", "SYSC_sendto", "SyS_sendto", "do_syscall_64",
          "entry_SYSCALL_64_after_hwframe"), (),
         "envoy", T_EPOLL, U_WORKER, "unix-socket", "waker"),
    Case("unix-write-space", 2003, "pilot-agent",
         EP_WAKE + ("unix_write_space", "sock_wfree", "unix_destruct_scm",
                    "skb_release_head_state", "consume_skb", "unix_stream_read_generic",
                    "unix_stream_recvmsg", "sock_recvmsg", "sock_read_iter", "vfs_read",
                    "ksys_read", "__x64_sys_read") + SYSCALL, ("syscall.Syscall",),
         "envoy", T_EPOLL, U_WORKER, "unix-socket", "waker", "buffer-space"),

    # --- TCP --------------------------------------------------------------------------------
    Case("tcp-loopback-probe-from-kubelet", 3001, "kubelet",
         EP_WAKE + ("sock_def_readable", "tcp_data_ready", "tcp_data_queue",
                    "tcp_rcv_established") + IP_RX_V4 + TX_LOOPBACK_TCP,
         ("syscall.Syscall", "syscall.write", "internal/poll.(*FD).Write"),
         "wrk:worker_0", T_EPOLL_BCC, U_WORKER, "tcp-receive", "waker"),
    Case("tcp-veth-from-app-6x-inlined", 3002, "productpage",
         EP_WAKE + ("sock_def_readable", "tcp_data_queue", "tcp_rcv_established",
                    "tcp_v4_do_rcv", "tcp_v4_rcv", "ip_protocol_deliver_rcu",
                    "ip_local_deliver_finish", "__netif_receive_skb_one_core",
                    "process_backlog", "__napi_poll", "net_rx_action", "handle_softirqs",
                    "do_softirq", "__local_bh_enable_ip", "__dev_queue_xmit",
                    "ip_finish_output2", "ip_output", "__ip_queue_xmit", "__tcp_transmit_skb",
                    "tcp_write_xmit", "__tcp_push_pending_frames", "tcp_sendmsg_locked",
                    "tcp_sendmsg", "sock_sendmsg", "__sys_sendto", "__x64_sys_sendto")
         + SYSCALL, ("__send", "gunicorn_write"),
         "wrk:worker_1", T_EPOLL, U_WORKER, "tcp-receive", "waker"),
    Case("tcp-4x-with-offsets", 3003, "kubelet",
         ("try_to_wake_up+0x1f0", "default_wake_function+0xc", "autoremove_wake_function+0x11",
          "__wake_up_common+0x7d", "__wake_up_sync_key+0x3e", "sock_def_readable+0x3f",
          "tcp_data_queue+0x3e4/0xd90", "tcp_rcv_established+0x2f1", "tcp_v4_do_rcv+0x140",
          "tcp_v4_rcv+0x5d2", "ip_local_deliver_finish+0x8d", "ip_local_deliver+0x6f",
          "ip_rcv_finish+0x87", "ip_rcv+0x286", "__netif_receive_skb_core+0x431",
          "__netif_receive_skb+0x18", "process_backlog+0xa4", "net_rx_action+0x2c5",
          "__do_softirq+0xd9", "do_softirq_own_stack+0x2a", "do_softirq.part.17+0x4d",
          "__local_bh_enable_ip+0x5b", "ip_finish_output2+0x1a6", "ip_output+0x6d",
          "ip_queue_xmit+0x15f", "tcp_transmit_skb+0x528", "tcp_write_xmit+0x1d3",
          "__tcp_push_pending_frames+0x2d", "tcp_sendmsg_locked+0x5e5", "tcp_sendmsg+0x27",
          "inet_sendmsg+0x3e", "sock_sendmsg+0x3e", "SYSC_sendto+0x13e", "sys_sendto+0xe",
          "do_syscall_64+0x73", "entry_SYSCALL_64_after_hwframe+0x3d"), (),
         "wrk:worker_0", T_EPOLL, U_WORKER, "tcp-receive", "waker"),
    Case("tcp-nic-irq-on-busy-process", 3004, "cruncher",
         EP_WAKE + ("sock_def_readable", "tcp_data_ready", "tcp_data_queue",
                    "tcp_rcv_established", "tcp_v4_do_rcv", "tcp_v4_rcv",
                    "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
                    "__netif_receive_skb_one_core", "__netif_receive_skb_list_core",
                    "netif_receive_skb_list_internal", "napi_complete_done", "virtnet_poll",
                    "__napi_poll", "net_rx_action") + NIC_IRQ_EXIT,
         ("crunch_numbers", "main"),
         "wrk:worker_0", T_EPOLL, U_WORKER, "tcp-receive", "interrupt"),
    Case("tcp-nic-irq-on-idle-cpu", 3005, "swapper/1",
         EP_WAKE + ("sock_def_readable", "tcp_data_queue", "tcp_rcv_established",
                    "tcp_v4_do_rcv", "tcp_v4_rcv", "ip_protocol_deliver_rcu",
                    "ip_local_deliver_finish", "__netif_receive_skb_one_core", "virtnet_poll",
                    "__napi_poll", "net_rx_action") + NIC_IRQ_EXIT + IDLE, (),
         "wrk:worker_1", T_EPOLL, U_WORKER, "tcp-receive", "interrupt"),
    Case("tcp-ksoftirqd", 3006, "ksoftirqd/1",
         EP_WAKE + ("sock_def_readable", "tcp_data_ready", "tcp_data_queue",
                    "tcp_rcv_established", "tcp_v4_do_rcv", "tcp_v4_rcv",
                    "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
                    "__netif_receive_skb_one_core", "process_backlog", "__napi_poll",
                    "net_rx_action") + KSOFTIRQD, (),
         "wrk:worker_0", T_EPOLL, U_WORKER, "tcp-receive", "ksoftirqd"),
    Case("tcp-under-eventfd-write-is-not-eventfd", 3007, "envoy",
         EP_WAKE + ("sock_def_readable", "tcp_data_queue", "tcp_rcv_established")
         + IP_RX_V4 + NIC_IRQ_EXIT + ("eventfd_write", "vfs_write", "ksys_write",
                                     "__x64_sys_write") + SYSCALL,
         ("__write", "Envoy::Event::DispatcherImpl::post(std::function<void ()>)"),
         "wrk:worker_1", T_EPOLL, U_WORKER, "tcp-receive", "interrupt"),
    Case("tcp-close-fin", 3101, "productpage",
         EP_WAKE + ("sock_def_wakeup", "tcp_fin", "tcp_data_queue", "tcp_rcv_established")
         + IP_RX_V4 + TX_LOOPBACK_TCP[:5] + ("__ip_queue_xmit", "__tcp_transmit_skb",
                                            "tcp_send_fin", "tcp_shutdown", "inet_shutdown",
                                            "__sys_shutdown", "__x64_sys_shutdown") + SYSCALL,
         ("shutdown",), "wrk:worker_0", T_EPOLL, U_WORKER, "tcp-close", "waker"),
    Case("tcp-close-reset-6.10", 3102, "swapper/0",
         ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common", "__wake_up",
          "ep_poll_callback", "__wake_up_common", "__wake_up", "sock_def_wakeup",
          "tcp_done_with_error", "tcp_reset", "tcp_validate_incoming", "tcp_rcv_established")
         + IP_RX_V4 + NIC_IRQ_EXIT + IDLE, (),
         "wrk:worker_1", T_EPOLL, U_WORKER, "tcp-close", "interrupt"),
    Case("tcp-accept", 3201, "wrk",
         EP_WAKE + ("sock_def_readable", "tcp_child_process", "tcp_v4_rcv",
                    "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
                    "__netif_receive_skb_one_core", "process_backlog", "__napi_poll",
                    "net_rx_action") + TX_LOOPBACK_TCP[:5] + ("__ip_queue_xmit",
                                                              "__tcp_transmit_skb",
                                                              "tcp_rcv_state_process",
                                                              "tcp_v4_do_rcv", "__release_sock",
                                                              "release_sock",
                                                              "__inet_stream_connect",
                                                              "inet_stream_connect",
                                                              "__sys_connect",
                                                              "__x64_sys_connect") + SYSCALL,
         ("__connect", "socket_connect", "main"),
         "wrk:worker_0", T_EPOLL, U_WORKER, "tcp-accept", "waker"),
    Case("tcp-connect", 3301, "swapper/0",
         ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common", "__wake_up",
          "ep_poll_callback", "__wake_up_common", "__wake_up_common_lock", "__wake_up",
          "sock_def_wakeup", "tcp_rcv_synsent_state_process", "tcp_rcv_state_process",
          "tcp_v4_do_rcv", "tcp_v4_rcv", "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
          "__netif_receive_skb_one_core", "virtnet_poll", "__napi_poll", "net_rx_action")
         + NIC_IRQ_EXIT + IDLE, (),
         "wrk:worker_1", T_EPOLL, U_WORKER, "tcp-connect", "interrupt"),
    Case("tcp-writable", 3401, "productpage",
         EP_WAKE + ("sk_stream_write_space", "tcp_check_space", "tcp_rcv_established")
         + IP_RX_V4 + TX_LOOPBACK_TCP, ("__send",),
         "wrk:worker_0", T_EPOLL, U_WORKER, "tcp-writable", "waker"),

    # --- UDP (DNS) --------------------------------------------------------------------------
    Case("udp-dns-answer-over-veth", 4001, "coredns",
         EP_WAKE + UDP_RX_V4 + TX_VETH_UDP,
         ("syscall.Syscall6", "syscall.sendto", "net.(*UDPConn).WriteTo",
          "github.com/miekg/dns.(*response).WriteMsg"),
         "envoy", T_EPOLL, U_WORKER, "udp-receive", "waker"),
    Case("udp-ipv6-4x", 4002, "dnsmasq",
         ("try_to_wake_up", "pollwake", "__wake_up_common", "__wake_up_common_lock",
          "__wake_up_sync_key", "sock_def_readable", "__udp_enqueue_schedule_skb",
          "__udpv6_queue_rcv_skb", "udpv6_queue_rcv_skb", "__udp6_lib_rcv", "udpv6_rcv",
          "ip6_input_finish", "ip6_input", "ipv6_rcv", "__netif_receive_skb_core",
          "process_backlog", "net_rx_action", "__do_softirq", "do_softirq_own_stack",
          "do_softirq", "__local_bh_enable_ip", "ip6_finish_output2", "ip6_output",
          "udp_v6_send_skb", "udpv6_sendmsg", "sock_sendmsg", "SYSC_sendto", "SyS_sendto",
          "do_syscall_64", "entry_SYSCALL_64_after_hwframe"), ("__sendto", "send_from"),
         "envoy", T_SELECT, (), "udp-receive", "waker"),

    # --- eventfd ----------------------------------------------------------------------------
    Case("eventfd-cross-thread-post", 5001, "envoy",
         ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common", "__wake_up",
          "ep_poll_callback", "__wake_up_common", "__wake_up_locked_key", "eventfd_write",
          "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL,
         ("__write", "Envoy::Event::DispatcherImpl::post(std::function<void ()>)",
          "Envoy::Upstream::ClusterManagerImpl::onClusterInit()"),
         "wrk:worker_0", T_EPOLL, U_WORKER, "eventfd", "waker", "cross-thread-post"),
    Case("eventfd-tls-update-beats-post", 5002, "envoy",
         ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common", "__wake_up",
          "ep_poll_callback", "__wake_up_common", "__wake_up_locked_key", "eventfd_write",
          "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL,
         ("__write", "Envoy::Event::DispatcherImpl::post(std::function<void ()>)",
          "Envoy::ThreadLocal::InstanceImpl::runOnAllThreads(std::function<void ()>)",
          "Envoy::Upstream::ClusterManagerImpl::updateClusterCounts()"),
         "wrk:worker_1", T_EPOLL, U_WORKER, "eventfd", "waker", "thread-local-update"),
    Case("eventfd-mangled-post", 5003, "envoy",
         ("try_to_wake_up", "__wake_up_common", "__wake_up_locked_key", "eventfd_write",
          "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL,
         ("__write", "_ZN5Envoy5Event14DispatcherImpl4postENSt3__18functionIFvvEEE",
          "envoy+0x1a2b3c"),
         "wrk:worker_1", T_EPOLL, U_WORKER, "eventfd", "waker", "cross-thread-post"),
    Case("eventfd-no-user-frames", 5004, "envoy",
         ("try_to_wake_up", "__wake_up_common", "__wake_up_locked_key", "eventfd_write",
          "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL, ("envoy+0x2f00a1",),
         "wrk:worker_0", T_EPOLL, U_WORKER, "eventfd", "waker"),
    Case("eventfd-signal-from-kernel-io-uring", 5005, "iou-wrk-812",
         ("try_to_wake_up", "__wake_up_common", "__wake_up_locked_key", "eventfd_signal_mask",
          "io_eventfd_ops", "rcu_core", "handle_softirqs", "run_ksoftirqd"), (),
         "wrk:worker_0", T_EPOLL, U_WORKER, "eventfd", "ksoftirqd"),

    # --- pipe -------------------------------------------------------------------------------
    Case("pipe-write", 6001, "bash",
         ("try_to_wake_up", "autoremove_wake_function", "__wake_up_common",
          "__wake_up_common_lock", "__wake_up_sync_key", "pipe_write", "vfs_write",
          "ksys_write", "__x64_sys_write") + SYSCALL, ("__write", "main"),
         "envoy", T_READ, ("__read",), "pipe", "waker"),
    Case("pipe-read-makes-room", 6002, "cat",
         ("try_to_wake_up", "autoremove_wake_function", "__wake_up_common",
          "__wake_up_common_lock", "__wake_up_sync_key", "pipe_read", "vfs_read",
          "ksys_read", "__x64_sys_read") + SYSCALL, ("__read",),
         "envoy", T_EPOLL, U_WORKER, "pipe", "waker"),

    Case("pipe-6.18-anon-pipe-pselect", 6003, "h2-pipe-w",  # recorded on 6.18
         ("try_to_wake_up", "pollwake", "__wake_up_common", "__wake_up_sync_key",
          "anon_pipe_write", "vfs_write", "ksys_write", "do_syscall_64",
          "entry_SYSCALL_64_after_hwframe"), ("write",),
         "h2-pipe-r",
         ("__schedule", "schedule", "schedule_hrtimeout_range_clock",
          "poll_schedule_timeout.constprop.0", "do_select", "core_sys_select",
          "do_pselect.constprop.0", "__x64_sys_pselect6", "do_syscall_64",
          "entry_SYSCALL_64_after_hwframe"), ("select",), "pipe", "waker"),

    # --- futex ------------------------------------------------------------------------------
    Case("futex-access-log-flush", 7001, "wrk:worker_0",
         ("try_to_wake_up", "wake_up_q", "futex_wake", "do_futex", "__x64_sys_futex")
         + SYSCALL,
         ("syscall", "absl::synchronization_internal::FutexImpl::Wake(std::atomic<int>*, int)",
          "absl::CondVar::Signal()",
          "Envoy::AccessLog::AccessLogFileImpl::write(std::basic_string_view<char>)"),
         "AccessLogFlush", T_FUTEX, ("syscall",), "futex-wake", "waker", "access-log-flush"),
    Case("futex-4x-inlined-futex-wake", 7002, "wrk:worker_1",
         ("try_to_wake_up", "wake_up_q", "do_futex", "SyS_futex", "do_syscall_64",
          "entry_SYSCALL_64_after_hwframe"), ("__lll_unlock_wake", "pthread_mutex_unlock"),
         "wrk:worker_0", T_FUTEX_4X, ("__lll_lock_wait",), "futex-wake", "waker"),
    Case("futex-wake-op", 7003, "grpc_global_tim",
         ("try_to_wake_up", "wake_up_q", "futex_wake_op", "do_futex", "__x64_sys_futex")
         + SYSCALL, ("pthread_cond_signal",),
         "envoy", T_FUTEX, ("pthread_cond_wait",), "futex-wake", "waker"),

    # --- timers -----------------------------------------------------------------------------
    Case("timer-epoll-timeout-idle-cpu", 8001, "swapper/0",
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues") + APIC_TIMER
         + ("pv_native_safe_halt", "default_idle", "default_idle_call", "do_idle",
            "cpu_startup_entry", "rest_init", "arch_call_rest_init", "start_kernel",
            "x86_64_start_reservations", "x86_64_start_kernel",
            "secondary_startup_64_no_verify"), (),
         "envoy", T_EPOLL_BCC, U_WORKER, "timer", "interrupt", "epoll-timeout"),
    Case("timer-futex-timeout-busy-cpu", 8002, "cruncher",
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues") + APIC_TIMER,
         ("crunch_numbers", "main"),
         "AccessLogFlush", T_FUTEX, ("syscall",), "timer", "interrupt", "futex-timeout"),
    Case("timer-futex-timeout-4x", 8003, "swapper/1",
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues", "hrtimer_interrupt",
          "smp_apic_timer_interrupt", "apic_timer_interrupt", "native_safe_halt",
          "default_idle", "arch_cpu_idle", "do_idle", "cpu_startup_entry", "start_secondary",
          "secondary_startup_64"), (),
         "grpc_global_tim", T_FUTEX_4X, (), "timer", "interrupt", "futex-timeout"),
    Case("timer-nanosleep", 8004, "swapper/1",
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues") + APIC_TIMER + IDLE, (),
         "dog:main", T_NANOSLEEP, ("clock_nanosleep",), "timer", "interrupt", "sleep"),
    Case("timer-process-timeout-select", 8005, "swapper/0",
         ("try_to_wake_up", "process_timeout", "call_timer_fn", "__run_timers",
          "run_timer_softirq", "handle_softirqs", "__irq_exit_rcu", "irq_exit_rcu",
          "sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt") + IDLE, (),
         "envoy", T_SELECT, ("select",), "timer", "interrupt", "poll-timeout"),
    Case("timer-softirq-on-bh-enable-is-a-bystander", 8006, "kubelet",
         ("try_to_wake_up", "process_timeout", "call_timer_fn", "__run_timers",
          "run_timer_softirq", "handle_softirqs", "__local_bh_enable_ip", "ip_finish_output2",
          "ip_output", "__ip_queue_xmit", "__tcp_transmit_skb", "tcp_write_xmit",
          "tcp_sendmsg_locked", "tcp_sendmsg", "sock_sendmsg") + SYSCALL, ("syscall.Syscall",),
         "envoy", T_SELECT, ("select",), "timer", "interrupt", "poll-timeout"),
    Case("timer-ksoftirqd", 8007, "ksoftirqd/0",
         ("try_to_wake_up", "process_timeout", "call_timer_fn", "__run_timers",
          "run_timer_softirq") + KSOFTIRQD, (),
         "envoy", T_EPOLL, U_WORKER, "timer", "ksoftirqd", "epoll-timeout"),
    Case("timer-timerfd", 8008, "swapper/0",
         ("try_to_wake_up", "ep_autoremove_wake_function", "__wake_up_common", "__wake_up",
          "ep_poll_callback", "__wake_up_common", "__wake_up_locked_key", "timerfd_tmrproc",
          "__hrtimer_run_queues") + APIC_TIMER + IDLE, (),
         "envoy", T_EPOLL, U_WORKER, "timer", "interrupt", "timerfd"),

    Case("timer-6.18-nanosleep-timens", 8009, "python3",  # recorded on 6.18
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues", "hrtimer_interrupt",
          "__sysvec_apic_timer_interrupt", "sysvec_apic_timer_interrupt",
          "asm_sysvec_apic_timer_interrupt"), ("PyEval_EvalFrameDefault",),
         "h2-sleep",
         ("__schedule", "schedule", "do_nanosleep", "hrtimer_nanosleep", "common_nsleep_timens",
          "__x64_sys_clock_nanosleep", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"),
         ("clock_nanosleep",), "timer", "interrupt", "sleep"),
    Case("timer-6.18-futex-do-wait", 8010, "swapper/1",
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues") + APIC_TIMER + IDLE, (),
         "AccessLogFlush",
         ("__schedule", "schedule", "futex_do_wait", "do_futex", "__x64_sys_futex",
          "do_syscall_64", "entry_SYSCALL_64_after_hwframe"), ("syscall",),
         "timer", "interrupt", "futex-timeout"),

    Case("timer-arm64-idle", 8011, "swapper/3",
         ("try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues", "hrtimer_interrupt",
          "arch_timer_handler_virt", "handle_percpu_devid_irq", "generic_handle_domain_irq",
          "gic_handle_irq", "call_on_irq_stack", "do_interrupt_handler", "el1_interrupt",
          "el1h_64_irq_handler", "el1h_64_irq", "default_idle_call", "do_idle",
          "cpu_startup_entry", "secondary_start_kernel"), (),
         "envoy",
         ("__schedule", "schedule", "schedule_hrtimeout_range_clock", "do_epoll_wait",
          "__arm64_sys_epoll_pwait", "invoke_syscall", "el0_svc_common", "do_el0_svc",
          "el0_svc", "el0t_64_sync_handler", "el0t_64_sync"), ("epoll_pwait",),
         "timer", "interrupt", "epoll-timeout"),

    # --- signals, children ------------------------------------------------------------------
    Case("signal-kill", 9001, "pilot-agent",
         ("try_to_wake_up", "signal_wake_up_state", "complete_signal", "__send_signal_locked",
          "do_send_sig_info", "kill_pid_info", "kill_proc_info", "__x64_sys_kill") + SYSCALL,
         ("syscall.Syscall", "syscall.Kill", "os.(*Process).signal"),
         "envoy", T_EPOLL, U_WORKER, "signal", "waker"),
    Case("signal-4x", 9002, "kubelet",
         ("try_to_wake_up", "signal_wake_up_state", "complete_signal", "__send_signal",
          "send_signal", "do_send_sig_info", "SYSC_kill", "SyS_kill", "do_syscall_64",
          "entry_SYSCALL_64_after_hwframe"), (),
         "envoy", T_SIGSUSPEND, (), "signal", "waker"),
    Case("child-exit-wait4", 9101, "curl",
         ("try_to_wake_up", "child_wait_callback", "__wake_up_common", "__wake_up_common_lock",
          "__wake_up_sync_key", "__wake_up_parent", "do_notify_parent", "exit_notify",
          "do_exit", "do_group_exit", "__x64_sys_exit_group") + SYSCALL, ("_exit",),
         "pilot-agent", T_WAIT4, ("wait4",), "child-exit", "waker"),
    Case("child-exit-sigchld-is-not-just-a-signal", 9102, "curl",
         ("try_to_wake_up", "signal_wake_up_state", "complete_signal", "__send_signal_locked",
          "do_notify_parent", "exit_notify", "do_exit", "do_group_exit",
          "__x64_sys_exit_group") + SYSCALL, ("_exit",),
         "pilot-agent", T_EPOLL, U_WORKER, "child-exit", "waker"),

    # --- I/O --------------------------------------------------------------------------------
    Case("io-nvme-completion", 10001, "swapper/1",
         ("try_to_wake_up", "wake_bit_function", "__wake_up_common", "__wake_up_common_lock",
          "__wake_up_bit", "end_buffer_read_sync", "end_bio_bh_io_sync", "bio_endio",
          "blk_update_request", "blk_mq_end_request", "nvme_irq", "__handle_irq_event_percpu",
          "handle_irq_event", "handle_edge_irq", "__common_interrupt", "common_interrupt",
          "asm_common_interrupt") + IDLE, (),
         "AccessLogFlush", T_IO, ("__write",), "io", "interrupt"),
    Case("io-complete-under-bio-endio-is-io", 10002, "kworker/1:1H",
         ("try_to_wake_up", "swake_up_locked", "complete", "submit_bio_wait_endio",
          "bio_endio", "blk_update_request", "blk_mq_end_request", "blk_mq_complete_request",
          "virtblk_done", "vring_interrupt", "process_one_work", "worker_thread", "kthread",
          "ret_from_fork"), (),
         "AccessLogFlush", T_IO, (), "io", "waker"),

    # --- kernel locks -----------------------------------------------------------------------
    Case("kernel-mutex-in-pipe-write", 11001, "wrk:worker_1",
         ("try_to_wake_up", "wake_up_q", "__mutex_unlock_slowpath.constprop.0", "pipe_write",
          "vfs_write", "ksys_write", "__x64_sys_write") + SYSCALL, ("__write",),
         "wrk:worker_0", T_MUTEX, ("__write",), "kernel-lock", "waker", "mutex"),
    Case("kernel-rwsem-mmap", 11002, "envoy",
         ("try_to_wake_up", "wake_up_q", "rwsem_wake.isra.0", "up_write", "vm_mmap_pgoff",
          "ksys_mmap_pgoff", "__x64_sys_mmap") + SYSCALL, ("mmap64", "tcmalloc::SystemAlloc"),
         "wrk:worker_0",
         ("__schedule", "schedule", "rwsem_down_read_slowpath", "down_read",
          "do_user_addr_fault", "exc_page_fault", "asm_exc_page_fault"), ("memcpy",),
         "kernel-lock", "waker", "rwsem"),
    Case("kernel-completion", 11003, "kworker/0:2",
         ("try_to_wake_up", "swake_up_locked", "complete", "flush_work_fn", "process_one_work",
          "worker_thread", "kthread", "ret_from_fork", "ret_from_fork_asm"), (),
         "envoy",
         ("__schedule", "schedule", "schedule_timeout", "wait_for_completion",
          "__flush_work", "tty_buffer_flush_work", "tty_port_default_receive_buf"), (),
         "kernel-lock", "waker", "completion"),

    # --- other ------------------------------------------------------------------------------
    Case("other-inotify", 12001, "kubelet",
         ("try_to_wake_up", "__wake_up_common", "__wake_up_common_lock", "__wake_up",
          "inotify_handle_inode_event", "send_to_group", "fsnotify", "vfs_write", "ksys_write",
          "__x64_sys_write") + SYSCALL, ("syscall.Syscall",),
         "envoy", T_EPOLL, U_WORKER, "other", "waker",
         "inotify_handle_inode_event, send_to_group, fsnotify"),
)


def _classify(case: Case):
    return Classifier().classify(case.waker_stack(), case.target_stack(), case.preempted,
                                 has_waker=case.waker_comm is not None,
                                 waker_comm=case.waker_comm)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case) -> None:
    got = _classify(case)
    assert (got.category, got.cause, got.detail) == (case.category, case.cause, case.detail), \
        f"decided by rule {got.rule}"


def test_cases_cover_every_category_and_cause() -> None:
    assert {c.category for c in CASES} == set(CATEGORY_BY_ID)
    assert {c.cause for c in CASES} == set(CAUSES)


def test_case_values_are_unique() -> None:
    values = [c.value for c in CASES]
    assert len(values) == len(set(values))


def test_every_rule_frame_decides_alone() -> None:
    """Each frame of the table, alone in a stack, triggers its own rule (or an earlier one
    listing the same frame): the index, the prefix and the generic tier all work."""
    first: dict = {}
    for rule in RULES:
        for frame in rule.frames:
            first.setdefault((rule.stack, frame), rule)
    target = Stack(T_EPOLL, len(T_EPOLL))
    for (kind, frame), rule in first.items():
        if kind == WAKER:
            got = Classifier().classify(Stack(("try_to_wake_up", frame), 2), target, False,
                                        waker_comm="someone")
            assert got.category == rule.category, (frame, got)
            assert got.rule.split("+")[0] == rule.id, (frame, got)
        elif kind == TARGET:
            got = Classifier().classify(None, Stack(("__schedule", frame), 2), True)
            assert (got.category, got.rule) == (rule.category, rule.id), (frame, got)


def test_leaf_nearest_specific_rule_decides() -> None:
    # A FIN carried in tcp_data_queue: tcp_fin is nearer the leaf.
    stack = Stack(EP_WAKE + ("sock_def_wakeup", "tcp_fin", "tcp_data_queue"), None)
    got = Classifier().classify(stack, Stack(T_EPOLL, None), False, waker_comm="x")
    assert got.category == "tcp-close"
    # A mutex released inside pipe_write wakes a lock waiter, not a pipe reader.
    stack = Stack(("try_to_wake_up", "wake_up_q", "__mutex_unlock_slowpath", "pipe_write"), 4)
    assert Classifier().classify(stack, Stack(T_EPOLL, 7), False).category == "kernel-lock"


def test_generic_rule_only_when_nothing_specific() -> None:
    # 'complete' alone is a kernel lock; under bio_endio it is I/O.
    alone = Stack(("try_to_wake_up", "complete", "some_driver_fn"), 3)
    under = Stack(("try_to_wake_up", "complete", "submit_bio_wait_endio", "bio_endio"), 4)
    c = Classifier()
    target = Stack(T_IO, len(T_IO))
    assert c.classify(alone, target, False).category == "kernel-lock"
    assert c.classify(under, target, False).category == "io"


def test_interrupted_code_does_not_classify_the_wake() -> None:
    """Frames beyond an interrupt entry are what the CPU happened to run, not the event."""
    stack = Stack(("try_to_wake_up", "mystery_wake", "__sysvec_irq_work",
                   "asm_sysvec_irq_work", "unix_stream_sendmsg", "sock_sendmsg") + SYSCALL, 8)
    got = Classifier().classify(stack, Stack(T_EPOLL, 7), False, waker_comm="pilot-agent")
    assert (got.category, got.cause) == ("other", "interrupt")
    assert got.detail is not None and got.detail.startswith("mystery_wake")


def test_user_rules_ignored_for_bystanders() -> None:
    """An interrupted worker's user frames say nothing about a wake the interrupt made."""
    case = next(c for c in CASES if c.name == "tcp-under-eventfd-write-is-not-eventfd")
    got = _classify(case)
    assert got.detail is None and "envoy-post" not in got.rule


def test_user_frames_decide_when_kernel_stack_is_missing() -> None:
    stack = Stack(("__write", "Envoy::Event::DispatcherImpl::post(std::function<void ()>)"), 0,
                  missing="kernel")
    got = Classifier().classify(stack, Stack(T_EPOLL, 7), False, waker_comm="envoy")
    assert (got.category, got.detail) == ("eventfd", "cross-thread-post")


def test_unknown_kernel_depth_still_classifies_and_refines() -> None:
    """BCC text without -d: kernel and user frames in one list, boundary unknown."""
    frames = ("try_to_wake_up", "__wake_up_common", "eventfd_write", "vfs_write",
              "ksys_write", "do_syscall_64", "__write",
              "Envoy::Event::DispatcherImpl::post(std::function<void ()>)")
    got = Classifier().classify(Stack(frames, None), Stack(T_EPOLL, None), False,
                                waker_comm="envoy")
    assert (got.category, got.detail) == ("eventfd", "cross-thread-post")


def test_wake_without_waker_stack_but_preempted_target() -> None:
    """BCC prints a preemption as a wake with no waker; the target stack tells."""
    target = Stack(("finish_task_switch.isra.0", "__schedule", "schedule",
                    "exit_to_user_mode_loop"), 4)
    got = Classifier().classify(Stack((), None), target, False, has_waker=False)
    assert (got.category, got.cause) == ("preempted-involuntary", "none")
    got = Classifier().classify(None, Stack(T_EPOLL, 7), False, has_waker=False)
    assert (got.category, got.cause, got.rule) == ("other", "none", "no-waker")


def test_missing_waker_stack_is_other_with_a_reason() -> None:
    got = Classifier().classify(Stack((), None, missing="both"), Stack(T_EPOLL, 7), False,
                                waker_comm="kubelet")
    assert (got.category, got.detail) == ("other", "no waker stack")


def test_ksoftirqd_by_comm_when_the_loop_frame_is_absent() -> None:
    stack = Stack(EP_WAKE + ("sock_def_readable", "tcp_data_queue", "net_rx_action",
                             "__do_softirq"), 14)
    c = Classifier()
    assert c.classify(stack, Stack(T_EPOLL, 7), False, waker_comm="ksoftirqd/3").cause \
        == "ksoftirqd"
    assert c.classify(stack, Stack(T_EPOLL, 7), False, waker_comm="wrk").cause == "waker"


def test_idle_task_is_always_a_bystander() -> None:
    stack = Stack(("try_to_wake_up", "sched_ttwu_pending", "mystery"), 3)
    got = Classifier().classify(stack, Stack(T_EPOLL, 7), False, waker_comm="swapper/2")
    assert got.cause == "interrupt"


def test_memo_is_per_stack_identity_and_comm_kind() -> None:
    c = Classifier()
    case = next(x for x in CASES if x.name == "tcp-ksoftirqd")
    stack = case.waker_stack()
    target = case.target_stack()
    a = c.classify(stack, target, False, waker_comm="ksoftirqd/1")
    b = c.classify(stack, target, False, waker_comm="ksoftirqd/1")
    assert a is b


@pytest.mark.parametrize("raw,name", [
    ("tcp_v4_rcv+0x5d2", "tcp_v4_rcv"),
    ("tcp_data_queue+0x3e4/0xd90", "tcp_data_queue"),
    ("finish_task_switch.isra.0", "finish_task_switch"),
    ("__mutex_unlock_slowpath.constprop.0", "__mutex_unlock_slowpath"),
    ("rwsem_wake.isra.0.cold", "rwsem_wake"),
    ("do_softirq.part.17", "do_softirq"),
    ("tcp_ack.llvm.1234567", "tcp_ack"),
    ("tcp_v4_rcv_[k]", "tcp_v4_rcv"),
    ("b'tcp_v4_rcv'", "tcp_v4_rcv"),
    ("nvme_irq [nvme]", "nvme_irq"),
    ("envoy+0x1a2b3c", "envoy"),
    ("  hrtimer_wakeup  ", "hrtimer_wakeup"),
    ("Envoy::Event::DispatcherImpl::post(std::function<void ()>)",
     "Envoy::Event::DispatcherImpl::post(std::function<void ()>)"),
])
def test_normalize(raw: str, name: str) -> None:
    assert normalize(raw) == name
    assert normalize(normalize(raw)) == name


@pytest.mark.parametrize("comm,kind", [
    ("ksoftirqd/0", "ksoftirqd"), ("ksoftirqd/17", "ksoftirqd"), ("swapper/3", "idle"),
    ("swapper", "idle"), ("ksoftirqd", ""), ("kubelet", ""), ("", ""), (None, ""),
])
def test_comm_kind(comm: Optional[str], kind: str) -> None:
    assert comm_kind(comm) == kind


def test_rules_name_known_categories_and_have_reasons() -> None:
    for rule in RULES:
        assert rule.category in CATEGORY_BY_ID
        assert rule.reason and "\n" not in rule.reason
        assert rule.frames or rule.prefixes


# -- a real recording ------------------------------------------------------------------------

REAL_618 = (Path(__file__).resolve().parent.parent / "data" / "classify"
            / "real-6.18-h2load.jsonl.gz")

#: (target thread, waker thread) -> category, in a recording our collector made on Linux
#: 6.18 of one Python process whose threads wake each other through each mechanism
#: (the threads also hand Python's GIL to each other: futex wakes between any pair).
REAL_PAIRS = {
    ("h2-efd-r", "h2-efd-w"): "eventfd",
    ("h2-unix-r", "h2-unix-w"): "unix-socket",
    ("h2-tcp-srv", "h2-tcp-cli"): "tcp-receive",
    ("h2-udp-r", "h2-udp-w"): "udp-receive",
    ("h2-pipe-r", "h2-pipe-w"): "pipe",
    ("h2-futex-w", "h2-futex-s"): "futex-wake",
}


def test_real_618_recording() -> None:
    from kubectl_offwake.analysis import analyze
    from kubectl_offwake.importers import load_input

    report = analyze(load_input(str(REAL_618)))
    seen = dict.fromkeys(REAL_PAIRS, 0)
    for w in report.wakeups:
        pair = (w.target.comm, w.waker.comm if w.waker is not None else None)
        if pair in REAL_PAIRS:
            assert w.category in (REAL_PAIRS[pair], "futex-wake"), (pair, w.rule)
            assert w.cause == "waker"
            if w.category == REAL_PAIRS[pair]:
                seen[pair] += w.edge.count or 0
        if w.edge.preempted:
            assert w.category == "preempted-involuntary" and w.waker is None
        if w.category == "timer":
            assert w.cause == "interrupt" and w.detail in ("sleep", "poll-timeout")
        assert w.category != "other", (pair, w.detail)
    assert all(n >= 50 for n in seen.values()), seen


def test_every_rule_a_case_produces_has_a_reason() -> None:
    """``Wakeup.rule`` names table rows (``a+b`` when a user rule refined ``a``); each row
    says why it decides what it decides."""
    from kubectl_offwake.analysis import rules

    reasons = {r.id: r.reason for r in rules.RULES}
    for fallback in (rules.PREEMPTED_FALLBACK, rules.OTHER_FALLBACK, rules.NO_WAKER_FALLBACK):
        reasons[fallback.id] = fallback.reason
    for case in CASES:
        rule = _classify(case).rule
        assert all(reasons.get(part) for part in rule.split("+")), rule


REAL_ENVOY = (Path(__file__).resolve().parent.parent / "data" / "classify"
              / "real-6.18-envoy-1.40.jsonl.gz")


def test_real_envoy_recording() -> None:
    """Envoy 1.40 (stripped: user frames are envoy+0xOFF) serving wrk over loopback, two
    workers, access log on; traced by our collector on Linux 6.18."""
    from kubectl_offwake.analysis import analyze
    from kubectl_offwake.importers import load_input

    report = analyze(load_input(str(REAL_ENVOY)))
    roles = {t.target.comm: t.target.role for t in report.by_thread}
    assert roles["envoy"] == "main" and roles["wrk:worker_0"] == "worker"
    assert roles["wrk:worker_1"] == "worker" and roles["AccessLogFlush"] == "access-log-flush"
    assert roles["grpc_global_tim"] == "grpc-timer" and roles["dog:main_thread"] == "watchdog"
    by: dict = {}
    for w in report.wakeups:
        key = (w.target.role, w.waker.comm if w.waker else None, w.category, w.cause)
        by[key] = by.get(key, 0) + (w.edge.count or 0)
        assert w.category != "other", w.edge.waker_stack
        if w.category == "timer":
            assert w.cause == "interrupt"
            assert w.detail == ("futex-timeout" if w.target.role == "grpc-timer"
                                else "epoll-timeout")
    assert by[("worker", "wrk", "tcp-receive", "waker")] > 10_000
    assert by[("worker", None, "preempted-involuntary", "none")] > 1_000
    flush = sum(n for (role, waker, cat, _), n in by.items()
                if role == "access-log-flush" and cat == "futex-wake"
                and waker and waker.startswith("wrk:worker_"))
    assert flush > 100
    assert "access-log-flush" in {f.id for f in report.findings}
