"""The words of a report: who woke a thread, what a thread and a frame are called, how long
was traced, and the summary at the top.

Every view (the terminal table, JSON, folded, speedscope, SVG, HTML), the findings and the
live display take their words from here, so one thing has one name everywhere: an interrupt
wake is ``interrupt (timer)`` in every view (never the task it happened to interrupt, which
is kept apart as the *bystander*), a waker whose display name hides its thread is
``NAME (COMM)``, a thread is ``COMM (TID)``, and a list of wakers has one row per process
name (:func:`process_label`): every ``curl`` a shell loop in a container starts is one
``ns/pod/container (curl)``.

Display names of processes (``ns/pod/container``, ``host: COMM``, ``kernel: COMM``) are made
once, by :mod:`.naming`; this module composes them. Names come from a node and are
untrusted: the words here are plain text, and each output neutralizes what it writes
(:mod:`kubectl_offwake.untrusted`, or its own HTML/XML/JSON escaping on top of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Protocol, Tuple

from ..units import fmt_count, fmt_seconds, fmt_timestamp, fmt_us
from .classify import CAUSE_INTERRUPT, CAUSE_KSOFTIRQD, CAUSE_NONE, CAUSE_WAKER
from .envoy_counts import Beside, EnvoyCounts
from .report import Party, Report, Totals, Wakeup

# ------------------------------------------------------------------------ traced duration

#: The fields of a collector record that say how long it has traced, preferred first:
#: ``tracing_s`` counts from attach; ``elapsed_s`` (all a collector of an older version
#: sends) from the collector's start, so it includes the BPF compile.
TRACED_FIELDS = ("tracing_s", "elapsed_s")


def traced_field(record: Mapping[str, Any]) -> Any:
    """The raw value of the first :data:`TRACED_FIELDS` field a record has (or None).

    The recording builder checks it strictly (bad input), the live display leniently; both
    pick the field by this rule.
    """
    for key in TRACED_FIELDS:
        value = record.get(key)
        if value is not None:
            return value
    return None


def traced_seconds(source: Mapping[str, object]) -> Optional[float]:
    """How long a report's trace ran, in seconds, or None when nothing says.

    A recording's ``elapsed_s`` (what :func:`traced_field` gave last), else the duration an
    import's banner names (``duration_s``). Zero counts as unknown: no rate is made from it
    and no header claims it.
    """
    for key in ("elapsed_s", "duration_s"):
        value = source.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


# ---------------------------------------------------------------------------- parties


class Thread(Protocol):
    """Anything with a comm and maybe a thread id (a :class:`Party` or a model ``Task``)."""

    @property
    def comm(self) -> str: ...

    @property
    def tid(self) -> Optional[int]: ...


def says_comm(name: str, comm: str) -> bool:
    """Whether a display name already shows the comm (``host: kubelet``, ``ns/pod/coredns``)."""
    return not comm or name == comm or name.endswith(("/" + comm, ": " + comm))


def with_comm(name: str, comm: str) -> str:
    """A display name plus the comm it hides: ``app/pod/istio-proxy (pilot-agent)``."""
    return name if says_comm(name, comm) else f"{name} ({comm})"


def party_label(party: Party) -> str:
    """A waker or preemptor thread: its display name, with its comm when the name hides it."""
    return with_comm(party.name or party.comm, party.comm)


def process_label(party: Party) -> str:
    """A waker or preemptor process, as every list of them names it (who woke the threads,
    the findings): a container's process is ``ns/pod/container (COMM)`` with its process's
    comm (pilot-agent and Envoy share ``istio-proxy``; a shell loop's ``curl`` is not the
    app), and every other name (``host: COMM``, ``kernel: COMM``, a label the source
    gave, a bare comm) is the process's already.

    The rows are by this name, not by pid: two hundred ``curl`` processes that lived a few
    milliseconds each are one waker.
    """
    if party.pod and party.container and party.process_comm:
        return with_comm(party.name, party.process_comm)
    return party.name or party.comm


def thread_name(thread: Thread) -> str:
    """A target thread in a list of threads: ``COMM (TID)``."""
    return f"{thread.comm} ({thread.tid})" if thread.tid is not None else thread.comm


def thread_frame(target: Party, several_pods: bool) -> str:
    """A target thread as a flame graph frame: its comm, and its pod when the report spans
    pods (the tid would split every thread into its own tower)."""
    if several_pods and target.pod:
        return f"{target.comm} ({target.pod})"
    return target.comm


def spans_pods(wakeups: List[Wakeup]) -> bool:
    """Whether the target threads belong to more than one pod."""
    return len({w.target.pod for w in wakeups if w.target.pod}) > 1


def interrupt_label(category: str) -> str:
    """Who woke a thread from an interrupt: the interrupt, by what it did."""
    return f"interrupt ({category})"


def preempted_label(by: Optional[str]) -> str:
    """Who took the CPU from a runnable thread, when the source knows."""
    return f"preempted by {by}" if by else "preempted"


#: A wakeup whose source named no waker and no preemption.
NO_WAKER = "[no waker]"
#: Who held the CPU while a thread waited to run, when nobody did: the CPU was idle, so
#: the wait was the wakeup's own latency (waking the CPU, moving the thread to it).
IDLE_CPU = "idle CPU"
#: Group keys (``by_waker[].key`` in the report JSON) of waker processes (by
#: :func:`process_label`), interrupts and preemptors.
WAKER_KEY_PREFIX = "waker:"
INTERRUPT_KEY_PREFIX = "interrupt:"
PREEMPTED_KEY_PREFIX = "preempted:"


def woken_by(wakeup: Wakeup) -> str:
    """The one name of who (or what) woke a thread, for every view of one wake path."""
    if wakeup.cause == CAUSE_INTERRUPT:
        return interrupt_label(wakeup.category)
    if wakeup.waker is not None and not wakeup.edge.preempted:
        return party_label(wakeup.waker)
    if wakeup.preempted_by is not None:
        return preempted_label(party_label(wakeup.preempted_by))
    return preempted_label(None) if wakeup.edge.preempted else NO_WAKER


def waker_group(wakeup: Wakeup) -> Tuple[str, str]:
    """The (key, label) a wakeup is summed under in "who woke the threads": the waker by
    its :func:`process_label`, the interrupt by what it did, or who preempted (by name too).

    One name, one row: the label is the key's name, so every view that sums by the key
    (the table, HTML, JSON, the findings) shows a name once, with its total.
    """
    if wakeup.cause == CAUSE_INTERRUPT:
        return f"{INTERRUPT_KEY_PREFIX}{wakeup.category}", interrupt_label(wakeup.category)
    if wakeup.waker is not None:
        name = process_label(wakeup.waker)
        return WAKER_KEY_PREFIX + name, name
    if wakeup.preempted_by is not None:
        name = process_label(wakeup.preempted_by)
        return PREEMPTED_KEY_PREFIX + name, preempted_label(name)
    if wakeup.edge.preempted:
        return PREEMPTED_KEY_PREFIX, preempted_label(None)
    return ":?", NO_WAKER


def bystander(wakeup: Wakeup) -> Optional[Party]:
    """The task an interrupt wake happened to run on (often ``swapper/N``), else None.

    Kept apart from the waker: it was only on that CPU when the interrupt came.
    """
    return wakeup.waker if wakeup.cause == CAUSE_INTERRUPT else None


_CAUSE_PHRASES = {
    CAUSE_WAKER: "by the waker's own code path",
    CAUSE_KSOFTIRQD: "deferred to ksoftirqd (sender unknown)",
    CAUSE_NONE: "no waker: preempted",
}


def cause_phrase(wakeup: Wakeup) -> str:
    """How a wake path's cause reads after its category (``in an interrupt while X ran``)."""
    if wakeup.cause == CAUSE_INTERRUPT:
        by = bystander(wakeup)
        return (f"in an interrupt while {party_label(by)} was on the CPU" if by is not None
                else "in an interrupt")
    return _CAUSE_PHRASES.get(wakeup.cause, f"cause {wakeup.cause}")


# ----------------------------------------------------------------------------- frames

#: Between the target's stack and the waker's, as in BCC offwaketime's chain graphs.
SEPARATOR = "--"
#: A side of a chain with no stack at all.
NO_STACK = "[no stack]"


def missing_stack(half: str) -> str:
    """The frame that stands for a half of a stack the tracer failed to capture."""
    return f"[{half} stack missing]"


def is_marker(frame: str) -> bool:
    """A frame that says something about the stack rather than naming code
    (``[no stack]``, ``[user stack missing]``, a tracer's ``[unknown]``)."""
    return frame.startswith("[") and frame.endswith("]")


# ---------------------------------------------------------------------------- summary

#: How many bare thread names a summary lists before "and N more".
MAX_BARE = 4
#: ``source["kind"]`` values that deserve a word in the summary (our own recordings don't).
_KIND_WORDS = {
    "offwaketime-text": "BCC offwaketime output",
    "offwaketime-folded": "BCC offwaketime -f output",
}


def target_names(report: Report) -> List[str]:
    """What was traced: the processes as ``NAME (pid N)``, in order of first appearance.

    Derived from the target threads, so imports of BCC output (which name no pod) still
    say which comm was traced; the source's own word for the target otherwise.
    """
    names: List[str] = []
    bare: List[str] = []  # threads of no known process (BCC output names only comms)
    for thread in report.by_thread:
        party = thread.target
        if party.pid is None:
            if party.name not in bare:
                bare.append(party.name)
            continue
        label = f"{party.name} (pid {party.pid})"
        if label not in names:
            names.append(label)
    if bare:
        shown = ", ".join(bare[:MAX_BARE])
        more = f" and {len(bare) - MAX_BARE} more" if len(bare) > MAX_BARE else ""
        names.append(f"threads {shown}{more}")
    if not names and report.source.get("target"):
        names.append(str(report.source["target"]))
    return names


def source_facts(source: Mapping[str, object]) -> List[str]:
    """How long, from when, how it ended, on what: the phrases under a report's title.

    Anything said about the run as a whole (how it stopped, what it could not do) belongs
    in this list, so every view shows it.
    """
    facts: List[str] = []
    seconds = traced_seconds(source)
    started = fmt_timestamp(source.get("started"))
    if seconds is not None:
        facts.append(f"traced {fmt_seconds(seconds)}" + (f" from {started}" if started else ""))
    elif started:
        facts.append(f"started {started}")
    reason = source.get("end_reason")
    if reason and reason != "duration":
        facts.append(f"stopped by {reason}")
    if source.get("node"):
        facts.append(f"node {source['node']}")
    if source.get("kernel"):
        facts.append(f"kernel {source['kernel']}")
    if source.get("bcc_version"):
        facts.append(f"BCC {source['bcc_version']}")
    headers = source.get("headers")
    if isinstance(headers, dict) and headers.get("source"):
        facts.append(f"headers: {headers['source']}")
    kind = source.get("kind")
    if isinstance(kind, str) and kind in _KIND_WORDS:
        facts.append(_KIND_WORDS[kind])
    name = source.get("input")
    if name:
        facts.append(f"from {name}")
    return facts


@dataclass(frozen=True)
class Fact:
    """One total: its value, what it counts, and (for a page) what that means."""

    value: str
    label: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.value} {self.label}"


def total_facts(totals: Totals) -> List[Fact]:
    """The report's totals, in the order every view lists them; unknowns are left out."""
    facts = [Fact(fmt_us(totals.off_cpu_us), "off the CPU"),
             Fact(fmt_count(totals.threads), "threads", "target threads with off-CPU time")]
    if totals.wakeups is not None:
        facts.append(Fact(fmt_count(totals.wakeups), "wakeups"))
    facts.append(Fact(fmt_count(totals.edges), "distinct wake paths",
                      "different (waker stack, target stack) pairs"))
    if totals.blocked_us is not None:
        facts.append(Fact(fmt_us(totals.blocked_us), "blocked", "waiting for an event"))
    if totals.runq_us is not None:
        facts.append(Fact(fmt_us(totals.runq_us), "in the run queue", "woken, waiting for a CPU"))
    return facts


# ----------------------------------------------------------------------- Envoy's counts

#: The heading of the rows that set Envoy's counts beside the wakeups, in every view.
ENVOY_COUNTED = "What Envoy counted, beside the wakeups"
#: The heading of the run-queue holders (analysis/runqueue.py), in every view.
HELD_CPU = "Who had the CPU while the threads waited to run"


def envoy_facts(counts: EnvoyCounts) -> str:
    """Which Envoy, where its counters came from and over how long (or why not)."""
    who = f"envoy (pid {counts.pid})" if counts.pid is not None else "envoy"
    if not counts.read:
        return (f"{who}: its admin counters could not be read (the recording's log "
                "says why)")
    return f"{who}: admin {counts.admin}, counters read {fmt_seconds(counts.window_s)} apart"


def listening_sockets(counts: EnvoyCounts) -> str:
    """Envoy's listening sockets per address: a socket per worker, or one they share."""
    shared = counts.shared_listeners()
    parts = []
    for address, n in sorted(counts.listeners.items()):
        if address in shared:
            parts.append(f"{address} 1 shared by the workers")
        else:
            parts.append(f"{address} {n}")
    return "listening sockets: " + (", ".join(parts) if parts else "none seen")


def trace_value(row: Beside) -> str:
    """What the trace saw of a row: a count of wakeups, or a duration."""
    if row.trace_unit == "us":
        return fmt_us(row.trace_value)
    return fmt_count(row.trace_value)
