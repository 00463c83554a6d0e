"""Property tests for the readers: nothing but BadInput ever escapes, and what a generator
prints the way the collector or BCC would is read back exactly.

The BCC printers below follow tools/offwaketime.py's print statements line for line (text:
``"    %-16s %s %s" % ("waker:", comm, pid)``, the waker stack user-then-kernel root first,
``"    %-16s %s" % ("--", "--")``, the target kernel-then-user leaf first, ``-`` with -d only
when both halves exist; folded: target root first, ``--``, waker leaf first).
"""
# The printers keep BCC's own %-formatting so they can be compared with it line by line.
# ruff: noqa: UP031

from __future__ import annotations

import gzip
import io
import json
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kubectl_offwake.errors import BadInput
from kubectl_offwake.importers import load_bytes
from kubectl_offwake.wire import WireWriter

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- arbitrary input -------------------------------------------------------------------------

_PIECES = st.sampled_from([
    ";", " ", "-", "--", "\n", "waker:", "target:", "    ", "12", "0", "[unknown]",
    "[Missed User Stack]", "[Missed Kernel Stack] -14", "b'tcp_v4_rcv'", "--               --",
    "Tracing blocked time (us) by user + kernel off-CPU and waker stack", "WARNING: 3",
    '{"type":"hello","seq":1,"schema":1}', '{"type":"wakeup"', "\x00", "\x1f\x8b", "é", "^C",
])
_CHAOTIC_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=60).map("".join)


def _load_or_bad_input(data: bytes) -> None:
    try:
        recording = load_bytes(data, "h1-fuzz")
    except BadInput as exc:
        message = str(exc)
        assert message and "\n" not in message
        return
    assert isinstance(recording.warnings, list)
    for edge in recording.edges:
        # Whole microseconds, whatever the input said (never a float, a bool or a string).
        assert type(edge.total_us) is int, edge


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_bad_input(data):
    _load_or_bad_input(data)


@SETTINGS
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=700))
def test_arbitrary_gzip_and_cut_gzip_raise_only_bad_input(data, cut):
    packed = gzip.compress(data)
    _load_or_bad_input(packed[:cut])
    _load_or_bad_input(packed + data[:cut])


@SETTINGS
@given(_CHAOTIC_TEXT)
def test_text_made_of_format_pieces_raises_only_bad_input(text):
    _load_or_bad_input(text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.lists(st.dictionaries(
    st.sampled_from(["type", "seq", "schema", "tid", "pid", "comm", "target_stack",
                     "waker_stack", "total_us", "frames", "id", "kernel_depth", "state",
                     "processes", "phase", "reason", "totals", "lost", "warnings", "level",
                     "message", "hist_log2_us", "count", "max_us", "threads"]),
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=True),
              st.text(max_size=5), st.lists(st.integers(0, 5), max_size=3),
              st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
              st.sampled_from(["hello", "wakeup", "stack", "process", "target", "oncpu",
                               "pending", "cgroup_stat", "snapshot", "end", "log", "identity",
                               "progress", "start", "preempted"])),
    max_size=8), max_size=25))
def test_wire_records_with_any_fields_raise_only_bad_input(records):
    lines = [json.dumps({"type": "hello", "seq": 0, "schema": 1})]
    lines += [json.dumps(r) for r in records]
    _load_or_bad_input("\n".join(lines).encode())


# -- generated valid inputs ------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_REAL_FRAMES = ["tcp_v4_rcv", "tcp_data_queue", "sock_def_readable", "__local_bh_enable_ip",
                "do_softirq", "net_rx_action", "process_backlog", "hrtimer_wakeup",
                "asm_sysvec_apic_timer_interrupt", "[unknown]", "epoll_wait",
                "Envoy::Event::DispatcherImpl::post(std::function<void ()>)",
                "finish_task_switch.isra.0", "libc.so.6+0x1d4f2", "runtime.goexit.abi0"]
# Symbols as BCC prints them: never empty, no ';', no surrounding blanks, and not one of the
# printer's own words at the start of a line (BCC's format cannot tell those apart either).
_RESERVED = ("waker:", "target:", "WARNING:", "Tracing blocked time", "Detaching...")
_FRAME = st.one_of(
    st.sampled_from(_REAL_FRAMES),
    st.builds(lambda head, tail: (head + tail).rstrip(), st.sampled_from(_LETTERS),
              st.text(alphabet=_LETTERS + "0123456789.:<>()&*, /+-", max_size=24)),
).filter(lambda f: not f.startswith(_RESERVED))
_COMM = st.builds(lambda head, tail: (head + tail).rstrip(), st.sampled_from(_LETTERS),
                  st.text(alphabet=_LETTERS + "0123456789:/#. -", max_size=14))
_MISSING = "MISSING"


def _half(min_size: int):
    return st.one_of(st.lists(_FRAME, min_size=min_size, max_size=6),
                     st.just(_MISSING)).filter(lambda h: h == _MISSING or len(h) >= min_size)


_STACK = st.tuples(_half(1), _half(0))  # (kernel leaf first, user leaf first)
_TASK = st.tuples(_COMM, st.integers(min_value=0, max_value=4194304))
_ENTRY = st.tuples(
    _TASK, _STACK,  # target
    st.one_of(st.none(), st.tuples(_TASK, _STACK)),  # waker, None = preemption
    st.integers(min_value=1, max_value=10**9),
)


def _expected_stack(stack, delimited: bool) -> Tuple[tuple, Optional[int], Optional[str]]:
    kernel, user = stack
    mk, mu = kernel == _MISSING, user == _MISSING
    k = [] if mk else list(kernel)
    u = [] if mu else list(user)
    missing = "both" if mk and mu else "kernel" if mk else "user" if mu else None
    if missing or delimited:
        depth: Optional[int] = len(k)
    else:
        depth = None
    return tuple(k + u), depth, missing


def _printed_halves(stack) -> Tuple[List[str], List[str], bool]:
    kernel, user = stack
    k = ["[Missed Kernel Stack]"] if kernel == _MISSING else list(kernel)
    u = ["[Missed User Stack] -14"] if user == _MISSING else list(user)
    both = kernel != _MISSING and user != _MISSING and bool(kernel) and bool(user)
    return k, u, both


def _print_text(entries, delimited: bool) -> str:
    out = io.StringIO()
    out.write("Tracing blocked time (us) by user + kernel off-CPU and waker stack"
              "... Hit Ctrl-C to end.\n\n")
    for target, tstack, waker, value in entries:
        if waker is None:
            out.write("    %-16s %s %s\n" % ("waker:", "", 0))
        else:
            (wcomm, wtid), wstack = waker
            out.write("    %-16s %s %s\n" % ("waker:", wcomm, wtid))
            k, u, both = _printed_halves(wstack)
            for frame in reversed(u):
                out.write("    %s\n" % frame)
            if delimited and both:
                out.write("    -\n")
            for frame in reversed(k):
                out.write("    %s\n" % frame)
        out.write("    %-16s %s\n" % ("--", "--"))
        k, u, both = _printed_halves(tstack)
        for frame in k:
            out.write("    %s\n" % frame)
        if delimited and both:
            out.write("    -\n")
        for frame in u:
            out.write("    %s\n" % frame)
        out.write("    %-16s %s %s\n" % ("target:", target[0], target[1]))
        out.write("        %d\n\n" % value)
    return out.getvalue()


def _print_folded(entries, delimited: bool) -> str:
    lines = []
    for target, tstack, waker, value in entries:
        k, u, both = _printed_halves(tstack)
        line = [target[0]] + list(reversed(u))
        line += ["-"] if delimited and both else []
        line += list(reversed(k)) + ["--"]
        if waker is not None:
            (wcomm, _), wstack = waker
            k, u, both = _printed_halves(wstack)
            line += k + (["-"] if delimited and both else []) + u + [wcomm]
        else:
            line.append("")
        lines.append("%s %d" % (";".join(line), value))
    return "\n".join(lines) + "\n"


def _file_is_delimited(entries, delimited: bool) -> bool:
    if not delimited:
        return False
    for _, tstack, waker, _ in entries:
        if _printed_halves(tstack)[2] or (waker is not None and _printed_halves(waker[1])[2]):
            return True
    return False


def _aggregate(recording, with_tids: bool) -> Dict[tuple, int]:
    out: Dict[tuple, int] = defaultdict(int)
    for e in recording.edges:
        waker = None
        if e.waker is not None:
            ws = e.waker_stack
            waker = (e.waker.comm, e.waker.tid if with_tids else None,
                     (ws.frames, ws.kernel_depth, ws.missing) if ws else None)
        ts = e.target_stack
        key = ((e.target.comm, e.target.tid if with_tids else None),
               (ts.frames, ts.kernel_depth, ts.missing), waker, e.preempted)
        out[key] += e.total_us
    return dict(out)


def _expected(entries, delimited: bool, with_tids: bool) -> Dict[tuple, int]:
    file_delimited = _file_is_delimited(entries, delimited)
    out: Dict[tuple, int] = defaultdict(int)
    for (tcomm, ttid), tstack, waker, value in entries:
        w = None
        if waker is not None:
            (wcomm, wtid), wstack = waker
            w = (wcomm, wtid if with_tids else None, _expected_stack(wstack, file_delimited))
        key = ((tcomm, ttid if with_tids else None), _expected_stack(tstack, file_delimited), w,
               waker is None)
        out[key] += value
    return dict(out)


@SETTINGS
@given(st.lists(_ENTRY, min_size=1, max_size=8), st.booleans())
def test_generated_text_captures_round_trip(entries, delimited):
    text = _print_text(entries, delimited)
    recording = load_bytes(text.encode(), "h1-gen")
    assert recording.source["kind"] == "offwaketime-text"
    assert recording.warnings == []
    assert _aggregate(recording, True) == _expected(entries, delimited, True)


@SETTINGS
@given(st.lists(_ENTRY, min_size=1, max_size=8), st.booleans())
def test_generated_folded_captures_round_trip(entries, delimited):
    text = _print_folded(entries, delimited)
    recording = load_bytes(text.encode(), "h1-gen")
    assert recording.source["kind"] == "offwaketime-folded"
    assert recording.warnings == []
    assert _aggregate(recording, False) == _expected(entries, delimited, False)


@SETTINGS
@given(st.lists(_ENTRY, min_size=2, max_size=6), st.booleans(), st.data())
def test_a_corrupt_block_costs_only_itself(entries, delimited, data):
    text = _print_text(entries, delimited)
    blocks = text.split("\n\n")  # banner, entries..., ""
    victim = data.draw(st.integers(min_value=1, max_value=len(entries)))
    lines = blocks[victim].splitlines()
    sep = next(i for i, line in enumerate(lines) if line.strip().split() == ["--", "--"])
    blocks[victim] = "\n".join(lines[:sep] + lines[sep + 1:])  # drop its separator
    recording = load_bytes("\n\n".join(blocks).encode(), "h1-gen")
    assert recording.warnings == ["skipped 1 corrupt block(s)"]
    survivors = entries[: victim - 1] + entries[victim:]
    assume(survivors)
    got = sum(e.total_us for e in recording.edges)
    assert got == sum(entry[3] for entry in survivors)


# -- generated wire recordings ---------------------------------------------------------------

_WIRE_EDGE = st.tuples(
    st.integers(1, 5),  # tid
    st.sampled_from(["envoy", "wrk:worker_0", "wrk:worker_1"]),
    st.integers(1, 4),  # target stack id
    st.one_of(st.none(), st.tuples(st.integers(0, 3), st.sampled_from(["kubelet", "swapper/0"]),
                                   st.integers(1, 4))),
    st.integers(0, 10**7), st.integers(1, 100),
)


def _wire_text(snapshots: List[List[tuple]], stacks: Dict[int, List[str]]) -> str:
    out = io.StringIO()
    writer = WireWriter(out)
    writer.emit(dict(type="hello", schema=1, node="h1-node"))
    for sid, frames in stacks.items():
        writer.emit(dict(type="stack", id=sid, frames=frames, kernel_depth=len(frames)))
    for snap, edges in enumerate(snapshots, 1):
        for tid, comm, tstack, waker, total, count in edges:
            fields = dict(snap=snap, tid=tid, pid=1, comm=comm, target_stack=tstack,
                          total_us=total, count=count, max_us=total, blocked_us=total,
                          runq_us=0, state="blocked" if waker else "preempted")
            if waker:
                fields.update(waker_tid=waker[0], waker_pid=waker[0], waker_comm=waker[1],
                              waker_stack=waker[2])
            writer.emit(dict(type="wakeup", **fields))
        writer.emit(dict(type="snapshot", snap=snap, elapsed_s=float(snap)))
    writer.emit(dict(type="end", reason="duration", elapsed_s=1.0, totals={}, lost={},
                     warnings=[]))
    return out.getvalue()


_STACKS = {i: [f"h1_frame_{i}_{j}" for j in range(i + 1)] for i in range(1, 5)}


def _wire_expected(snapshots) -> Dict[tuple, Tuple[int, int]]:
    out: Dict[tuple, Tuple[int, int]] = {}
    for edges in snapshots:
        for tid, comm, tstack, waker, total, count in edges:
            key = (tid, comm, tstack, waker)
            t, c = out.get(key, (0, 0))
            out[key] = (t + total, c + count)
    return out


def _wire_got(recording) -> Dict[tuple, Tuple[int, int]]:
    ids = {tuple(frames): sid for sid, frames in _STACKS.items()}
    out = {}
    for e in recording.edges:
        waker = None
        if e.waker is not None:
            waker = (e.waker.tid, e.waker.comm, ids[e.waker_stack.frames])
        out[(e.target.tid, e.target.comm, ids[e.target_stack.frames], waker)] = (
            e.total_us, e.count)
    return out


@SETTINGS
@given(st.lists(st.lists(_WIRE_EDGE, max_size=8), min_size=1, max_size=5))
def test_generated_wire_recordings_round_trip_with_merged_deltas(snapshots):
    text = _wire_text(snapshots, _STACKS)
    for data in (text.encode(), gzip.compress(text.encode())):
        recording = load_bytes(data, "h1-gen")
        assert recording.warnings == []
        assert _wire_got(recording) == _wire_expected(snapshots)


@SETTINGS
@given(st.lists(st.lists(_WIRE_EDGE, min_size=1, max_size=5), min_size=1, max_size=5),
       st.data())
def test_cut_wire_recording_keeps_exactly_the_whole_snapshots(snapshots, data):
    text = _wire_text(snapshots, _STACKS)
    raw = text.encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    head = raw[:cut]
    try:
        recording = load_bytes(head, "h1-cut")
    except BadInput:
        # Only when not even the hello line survived whole.
        assert b"\n" not in head or not head.split(b"\n")[0].endswith(b"}")
        return
    # A line counts once it is whole JSON, even without its newline.
    whole_snapshots = 0
    for line in head.decode("utf-8", "replace").split("\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") == "snapshot":
            whole_snapshots += 1
    assert _wire_got(recording) == _wire_expected(snapshots[:whole_snapshots])
    if cut < len(raw.rstrip(b"\n")):
        assert recording.warnings, "a cut recording must say so"
