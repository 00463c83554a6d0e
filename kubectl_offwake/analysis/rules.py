"""The classifier's rules: one ordered table, read by :mod:`.classify`.

Every rule names the category it decides (an id of :data:`.categories.CATEGORIES`, checked
when this module loads), an optional detail, the stack it looks at, the frames that match
and why. Kernels differ in what they inline and rename, so a rule lists several
alternative frames; frames are compared after :func:`.frames.normalize`.

How the table is applied (see :mod:`.classify`):

* ``stack="target"`` rules with a preemption category classify edges whose target was
  switched out while runnable: the target stack shows where it was preempted.
* ``stack="waker"`` rules classify everything else. Only the waker's *event context* is
  searched: the frames from the leaf up to the first interrupt or softirq entry (beyond it
  is the code that happened to be running, not the code that made the event). Within it,
  the frame nearest the leaf that matches a ``specific`` rule decides; ``generic`` rules
  (mechanisms many subsystems share: ``complete``, signal delivery, a bare
  ``tcp_v4_rcv``, ``preempt_schedule_common``) decide only when no specific rule matched.
  Ties on one frame go to the rule listed first.
* ``stack="user"`` rules refine with symbolized user frames of the waker (substring match,
  demangled or mangled C++); the first rule in table order that matches anywhere sets the
  detail, and decides the category when the kernel frames said nothing. They are read only
  when the cause is ``waker``: an interrupted bystander's user frames say nothing.
* ``stack="target-detail"`` rules add a detail from the target stack (what the target was
  waiting in) to the categories they list, when the waker rule left the detail empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from .categories import CATEGORY_BY_ID

WAKER = "waker"
TARGET = "target"
USER = "user"
TARGET_DETAIL = "target-detail"
STACK_KINDS = (WAKER, TARGET, USER, TARGET_DETAIL)


@dataclass(frozen=True)
class Rule:
    """One line of the table."""

    id: str
    category: str
    stack: str
    frames: Tuple[str, ...] = ()
    prefixes: Tuple[str, ...] = ()
    detail: Optional[str] = None
    reason: str = ""
    generic: bool = False
    applies_to: Tuple[str, ...] = ()  # categories a refinement may refine; () = all wakes
    # The event is driven by a timer interrupt, never by the waker's own code: whoever ran
    # the expired timer (even a task's local_bh_enable running the timer softirq) was a
    # bystander, so the cause is "interrupt" unless the work ran in ksoftirqd.
    bystander: bool = False
    order: int = 0  # position in RULES, set when the table is built

    def __post_init__(self) -> None:
        if self.category not in CATEGORY_BY_ID:
            raise ValueError(f"rule {self.id}: unknown category {self.category!r}")
        for cat in self.applies_to:
            if cat not in CATEGORY_BY_ID:
                raise ValueError(f"rule {self.id}: unknown category {cat!r}")
        if self.stack not in STACK_KINDS:
            raise ValueError(f"rule {self.id}: unknown stack kind {self.stack!r}")
        if not self.frames and not self.prefixes:
            raise ValueError(f"rule {self.id}: matches no frame")

    def matches(self, name: str) -> bool:
        """Does a normalized kernel frame (exact or prefix), or a user frame (substring), match?"""
        if self.stack == USER:
            return any(f in name for f in self.frames)
        if name in self.frames:
            return True
        return bool(self.prefixes) and name.startswith(self.prefixes)


def _r(id: str, category: str, stack: str, frames: Tuple[str, ...], reason: str,
       detail: Optional[str] = None, generic: bool = False, prefixes: Tuple[str, ...] = (),
       applies_to: Tuple[str, ...] = (), bystander: bool = False) -> Rule:
    return Rule(id=id, category=category, stack=stack, frames=frames, prefixes=prefixes,
                detail=detail, reason=reason, generic=generic, applies_to=applies_to,
                bystander=bystander)


RULES: Tuple[Rule, ...] = (
    # --- preemptions: the target stack says where the runnable target lost the CPU ---------
    _r("preempt-return-to-user", "preempted-involuntary", TARGET,
       ("exit_to_user_mode_loop", "exit_to_usermode_loop", "exit_to_user_mode_prepare",
        "prepare_exit_to_usermode", "irqentry_exit_to_user_mode", "syscall_exit_to_user_mode",
        "retint_user", "do_notify_resume"),
       "need_resched was set while it ran; it was switched out on its way back to user space"),
    _r("preempt-irq", "preempted-involuntary", TARGET,
       ("preempt_schedule_irq", "irqentry_exit", "raw_irqentry_exit_cond_resched",
        "irqentry_exit_cond_resched", "dynamic_irqentry_exit_cond_resched", "retint_kernel",
        "arm64_preempt_schedule_irq"),
       "kernel preemption on return from an interrupt"),
    _r("preempt-enable", "preempted-involuntary", TARGET,
       ("preempt_schedule", "preempt_schedule_notrace", "preempt_schedule_thunk",
        "preempt_schedule_notrace_thunk", "__preempt_schedule"),
       "kernel preemption when preempt_enable() found a pending reschedule"),
    _r("preempt-cond-resched", "preempted-voluntary", TARGET,
       ("_cond_resched", "__cond_resched", "__cond_resched_lock", "__cond_resched_rwlock_read",
        "__cond_resched_rwlock_write", "dynamic_cond_resched"),
       "it reached a cond_resched() point in the kernel while another task wanted the CPU"),
    _r("preempt-yield", "preempted-voluntary", TARGET,
       ("do_sched_yield", "__x64_sys_sched_yield", "__arm64_sys_sched_yield", "yield"),
       "it called sched_yield()", detail="sched_yield"),
    _r("preempt-schedule-common", "preempted-voluntary", TARGET, ("preempt_schedule_common",),
       "an in-kernel resched point (cond_resched on older kernels)", generic=True),

    # --- unix sockets (pilot-agent <-> Envoy SDS/xDS, admin) ----------------------------------
    _r("unix-write-space", "unix-socket", WAKER, ("unix_write_space",),
       "the peer freed buffer space on a unix socket", detail="buffer-space"),
    _r("unix-send", "unix-socket", WAKER,
       ("unix_stream_sendmsg", "unix_dgram_sendmsg", "unix_seqpacket_sendmsg",
        "unix_stream_sendpage", "unix_stream_splice_actor"),
       "data was written to a unix socket"),
    _r("unix-connect", "unix-socket", WAKER, ("unix_stream_connect",),
       "a client connected to a listening unix socket", detail="connect"),
    _r("unix-close", "unix-socket", WAKER, ("unix_release_sock",),
       "the peer closed its unix socket", detail="close"),
    _r("unix-read", "unix-socket", WAKER, ("unix_dgram_recvmsg", "unix_stream_read_generic"),
       "the peer read from a unix socket, making room", detail="buffer-space"),

    # --- TCP: most specific first (close/accept/connect/writable happen inside receive) --------
    _r("tcp-fin", "tcp-close", WAKER,
       ("tcp_fin", "tcp_reset", "tcp_done", "tcp_done_with_error", "tcp_write_err"),
       "the peer closed or reset the connection (or it timed out)"),
    _r("tcp-accept", "tcp-accept", WAKER,
       ("tcp_child_process", "tcp_v4_syn_recv_sock", "tcp_v6_syn_recv_sock",
        "inet_csk_complete_hashdance", "inet_csk_reqsk_queue_add"),
       "a new connection completed its handshake on a listening socket"),
    _r("tcp-connect", "tcp-connect", WAKER,
       ("tcp_finish_connect", "tcp_rcv_synsent_state_process"),
       "an outgoing connect() completed"),
    _r("tcp-writable", "tcp-writable", WAKER,
       ("sk_stream_write_space", "tcp_check_space", "tcp_new_space"),
       "ACKs freed send-buffer space"),
    _r("tcp-data", "tcp-receive", WAKER,
       ("tcp_data_ready", "tcp_data_queue", "tcp_rcv_established", "tcp_queue_rcv",
        "tcp_ofo_queue", "tcp_urg"),
       "TCP data arrived"),
    _r("socket-state-change", "tcp-close", WAKER, ("sock_def_wakeup",),
       "a socket changed state (the connection is closing)", generic=True),
    _r("tcp-rcv-generic", "tcp-receive", WAKER,
       ("tcp_v4_rcv", "tcp_v6_rcv", "tcp_v4_do_rcv", "tcp_v6_do_rcv", "tcp_add_backlog",
        "tcp_rcv_state_process"),
       "a TCP segment was received (the specific handler was inlined)", generic=True),

    # --- UDP (DNS answers) ------------------------------------------------------------------
    _r("udp-receive", "udp-receive", WAKER,
       ("__udp_enqueue_schedule_skb", "udp_queue_rcv_one_skb", "udp_queue_rcv_skb",
        "__udp_queue_rcv_skb", "udp_unicast_rcv_skb", "__udp4_lib_rcv", "udp_rcv",
        "udpv6_queue_rcv_one_skb", "udpv6_queue_rcv_skb", "__udp6_lib_rcv", "udpv6_rcv",
        "__udp4_lib_mcast_deliver"),
       "a UDP datagram arrived"),

    # --- eventfd, pipes, futexes --------------------------------------------------------------
    _r("eventfd", "eventfd", WAKER,
       ("eventfd_write", "eventfd_signal", "eventfd_signal_mask", "eventfd_read"),
       "an eventfd was written (Envoy's Dispatcher::post wakes a thread this way)"),
    _r("pipe-close", "pipe", WAKER, ("pipe_release",), "a pipe end was closed", detail="close"),
    _r("pipe", "pipe", WAKER, ("pipe_write", "pipe_read", "anon_pipe_write", "anon_pipe_read"),
       "a pipe was written (or read, making room)"),
    _r("futex", "futex-wake", WAKER,
       ("futex_wake", "futex_wake_op", "futex_requeue", "futex_wake_mark", "mark_wake_futex",
        "futex_unlock_pi", "__x64_sys_futex_wake"),
       "another thread released a user-space lock or signalled a condition variable"),
    _r("futex-syscall", "futex-wake", WAKER,
       ("do_futex", "__x64_sys_futex", "__se_sys_futex", "__do_sys_futex", "SyS_futex",
        "sys_futex", "__arm64_sys_futex"),
       "a futex syscall woke it (the wake function itself was inlined)", generic=True),

    # --- timers -------------------------------------------------------------------------------
    _r("timerfd", "timer", WAKER, ("timerfd_tmrproc", "timerfd_alarmproc"),
       "a timerfd expired", detail="timerfd", bystander=True),
    _r("hrtimer", "timer", WAKER, ("hrtimer_wakeup",), "a high-resolution sleep timeout expired",
       bystander=True),
    _r("timeout", "timer", WAKER, ("process_timeout",), "a schedule_timeout() timeout expired",
       bystander=True),

    # --- child exit before signal: exit notification also sends SIGCHLD ----------------------
    _r("child-exit", "child-exit", WAKER,
       ("do_notify_parent", "__wake_up_parent", "child_wait_callback"),
       "a child process exited"),

    # --- block and other I/O ------------------------------------------------------------------
    _r("block-io", "io", WAKER,
       ("blk_mq_end_request", "bio_endio", "blk_update_request", "blk_mq_complete_request",
        "end_buffer_read_sync", "folio_end_writeback", "end_page_writeback", "folio_wake_bit",
        "wake_up_page_bit"),
       "a block I/O request completed"),
    _r("aio", "io", WAKER, ("aio_complete",), "an AIO request completed", detail="aio"),
    _r("io-uring", "io", WAKER,
       ("io_cqring_wake", "__io_cqring_wake", "io_req_local_work_add", "io_cqring_ev_posted"),
       "an io_uring completion was posted", detail="io_uring"),

    # --- in-kernel locks --------------------------------------------------------------------
    _r("mutex", "kernel-lock", WAKER, ("__mutex_unlock_slowpath", "mutex_unlock"),
       "an in-kernel mutex was released", detail="mutex"),
    _r("rwsem", "kernel-lock", WAKER, ("rwsem_wake", "rwsem_mark_wake", "up_write", "up_read"),
       "an in-kernel rw-semaphore was released", detail="rwsem"),
    _r("semaphore", "kernel-lock", WAKER, ("__up",), "an in-kernel semaphore was released",
       detail="semaphore"),

    # --- generic mechanisms: only when nothing specific matched in the same context ----------
    _r("signal", "signal", WAKER,
       ("signal_wake_up_state", "complete_signal", "signal_wake_up", "__send_signal_locked",
        "__send_signal", "send_signal", "send_signal_locked"),
       "a signal was delivered", generic=True),
    _r("completion", "kernel-lock", WAKER,
       ("complete", "complete_all", "swake_up_locked", "swake_up_one", "swake_up_all"),
       "an in-kernel completion was signalled", detail="completion", generic=True),

    # --- user frames of the waker (Envoy), first match in table order wins -------------------
    _r("envoy-stats-flush", "eventfd", USER,
       ("InstanceImpl::flushStats", "ThreadLocalStoreImpl::mergeHistograms",
        "12InstanceImpl10flushStats", "20ThreadLocalStoreImpl15mergeHistograms"),
       "the main thread's stats flush / histogram merge posted work to every worker",
       detail="stats-flush", applies_to=("eventfd", "futex-wake")),
    _r("envoy-tls-update", "eventfd", USER,
       ("ThreadLocal::InstanceImpl::runOnAllThreads", "12InstanceImpl15runOnAllThreads"),
       "a thread-local update (config, clusters, runtime) was posted to every worker",
       detail="thread-local-update", applies_to=("eventfd", "futex-wake")),
    _r("envoy-post", "eventfd", USER,
       ("Event::DispatcherImpl::post", "Event::DispatcherImpl::runPostCallbacks",
        "14DispatcherImpl4post", "14DispatcherImpl16runPostCallbacks"),
       "Envoy's Dispatcher::post handed work to another thread",
       detail="cross-thread-post", applies_to=("eventfd", "futex-wake")),
    _r("envoy-access-log", "futex-wake", USER,
       ("AccessLogFileImpl", "17AccessLogFileImpl"),
       "an access-log write signalled the AccessLogFlush thread (or it released the log lock)",
       detail="access-log-flush", applies_to=("futex-wake",)),

    # --- what the target was waiting in, for timeouts -----------------------------------------
    _r("wait-epoll", "timer", TARGET_DETAIL, ("do_epoll_wait", "ep_poll", "do_epoll_pwait"),
       "the target was in epoll_wait", detail="epoll-timeout", applies_to=("timer",)),
    _r("wait-futex", "timer", TARGET_DETAIL,
       ("futex_wait", "futex_wait_queue", "futex_wait_queue_me", "__futex_wait",
        "futex_wait_multiple", "futex_do_wait"),
       "the target was in a timed futex wait", detail="futex-timeout", applies_to=("timer",)),
    _r("wait-sleep", "timer", TARGET_DETAIL,
       ("do_nanosleep", "hrtimer_nanosleep", "common_nsleep", "common_nsleep_timens",
        "__x64_sys_nanosleep", "__x64_sys_clock_nanosleep"),
       "the target was sleeping", detail="sleep", applies_to=("timer",)),
    _r("wait-poll", "timer", TARGET_DETAIL,
       ("do_sys_poll", "do_select", "core_sys_select", "do_poll", "do_pselect",
        "poll_schedule_timeout"),
       "the target was in poll/select", detail="poll-timeout", applies_to=("timer",)),
)

#: Frames that enter interrupt context: a wake below one ran in an interrupt.
IRQ_FRAMES: Tuple[str, ...] = (
    "asm_common_interrupt", "common_interrupt", "do_IRQ", "irq_exit", "irq_exit_rcu",
    "__irq_exit_rcu", "hrtimer_interrupt", "apic_timer_interrupt", "smp_apic_timer_interrupt",
    "local_apic_timer_interrupt", "ret_from_intr", "handle_irq", "handle_edge_irq",
    "handle_fasteoi_irq", "handle_irq_event", "handle_irq_event_percpu",
    "__handle_irq_event_percpu", "generic_handle_irq", "generic_handle_domain_irq",
    "irq_enter_rcu", "irq_enter", "generic_smp_call_function_single_interrupt",
    "smp_call_function_single_interrupt", "smp_reschedule_interrupt", "reschedule_interrupt",
    "call_function_single_interrupt", "el1_interrupt", "el0_interrupt", "gic_handle_irq",
    "el0t_64_irq_handler", "el1h_64_irq_handler", "el0t_64_irq", "el1h_64_irq",
    "call_on_irq_stack", "do_interrupt_handler", "handle_domain_irq", "arch_timer_handler_phys",
    "arch_timer_handler_virt",
)
IRQ_PREFIXES: Tuple[str, ...] = ("asm_sysvec_", "sysvec_", "__sysvec_")

#: Frames that start softirq processing (bounds the event context, not an interrupt alone).
SOFTIRQ_FRAMES: Tuple[str, ...] = ("__do_softirq", "handle_softirqs", "do_softirq",
                                   "do_softirq_own_stack", "__local_bh_enable_ip",
                                   "invoke_softirq", "run_ksoftirqd")

#: The ksoftirqd thread's loop: a wake below it is deferred softirq work.
KSOFTIRQD_FRAMES: Tuple[str, ...] = ("run_ksoftirqd",)

#: Plumbing every wake passes through; left out of ``other``'s detail.
WAKE_PLUMBING = frozenset((
    "try_to_wake_up", "wake_up_process", "wake_up_state", "default_wake_function",
    "autoremove_wake_function", "woken_wake_function", "wake_up_q", "__wake_up_common",
    "__wake_up_common_lock", "__wake_up", "__wake_up_sync_key", "__wake_up_locked_key",
    "__wake_up_sync", "__wake_up_locked", "__wake_up_locked_sync_key", "ep_poll_callback",
    "pollwake", "ttwu_do_activate", "ttwu_queue", "ttwu_do_wakeup", "ttwu_queue_wakelist",
    "select_task_rq_fair", "wake_page_function", "wake_bit_function", "__wake_up_bit",
    "wake_up_bit", "swake_up_locked", "sched_ttwu_pending",
    "trace_event_raw_event_sched_wakeup_template", "perf_trace_sched_wakeup_template",
    "bpf_trace_run1", "__bpf_trace_sched_wakeup_template", "__traceiter_sched_waking",
    "ep_autoremove_wake_function", "wake_up_var", "__wake_up_pollfree",
))

@dataclass(frozen=True)
class Fallback:
    """What decides when no rule of the table matched."""

    id: str
    category: str
    reason: str

    def __post_init__(self) -> None:
        if self.category not in CATEGORY_BY_ID:
            raise ValueError(f"fallback {self.id}: unknown category {self.category!r}")


#: A preempted edge whose target stack shows no known preemption point.
PREEMPTED_FALLBACK = Fallback("preempted-unrecognised", "preempted-involuntary",
                              "the source says the target was switched out while runnable")
#: Nothing matched: ``other``, with the top frames in the detail.
OTHER_FALLBACK = Fallback("unrecognised", "other", "no rule matched the waker's frames")
#: The source names no waker and the target was not preempted.
NO_WAKER_FALLBACK = Fallback("no-waker", "other", "the source recorded no waker")

#: How many frames of an unmatched stack ``other`` keeps in its detail.
OTHER_DETAIL_FRAMES = 3


def _number(rules: Tuple[Rule, ...]) -> Tuple[Rule, ...]:
    """Each rule with its position, after checking ids are unique."""
    seen: Dict[str, Rule] = {}
    for rule in rules:
        if rule.id in seen:
            raise ValueError(f"duplicate rule id {rule.id}")
        seen[rule.id] = rule
    return tuple(replace(rule, order=i) for i, rule in enumerate(rules))


RULES = _number(RULES)
