"""wire/schema.py is the one description of the wire: every record a writer can emit has a
TypedDict, readers need no field a writer may leave out, and what the collector's own code
writes fits those TypedDicts key by key and value by value (tests/wire_shapes.py).

mypy checks the code that builds records (WireWriter.emit takes only a WireRecord); this
checks the records that code really produces, so a field added on one side only fails here.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional, get_args, get_type_hints

import pytest

from kubectl_offwake.analysis.model import ProcessInfo
from kubectl_offwake.cli.options import client_record
from kubectl_offwake.collector import main as collector_main
from kubectl_offwake.collector.bpfprog import (
    ST_BLOCKED,
    ST_PREEMPTED,
    Edge,
    MapSizes,
    OnCpuRow,
    QueuedRow,
    UserStack,
    Waiting,
)
from kubectl_offwake.collector.cli import Options
from kubectl_offwake.collector.envoy_stats import EnvoyStatsReader
from kubectl_offwake.collector.snapshot import Snapshotter
from kubectl_offwake.collector.targets import Target, resolve
from kubectl_offwake.demo.run import identity_records
from kubectl_offwake.importers import builder
from kubectl_offwake.k8s.naming import identity_for
from kubectl_offwake.wire import WireWriter
from kubectl_offwake.wire.schema import (
    RECORD_SHAPES,
    RECORD_TYPES,
    TRUNCATED_FRAME,
    BlockedWakeupRecord,
    PreemptedWakeupRecord,
    WireRecord,
)
from tests.wire_shapes import matching_shape, record_problems, shape_problems

ALL_SHAPES = [shape for shapes in RECORD_SHAPES.values() for shape in shapes]


# -- the schema itself ---------------------------------------------------------------------------


def test_every_record_type_has_shapes_and_a_reader_minimum():
    assert list(RECORD_SHAPES) == list(RECORD_TYPES)
    for rtype, shapes in RECORD_SHAPES.items():
        for shape in shapes:
            hints = get_type_hints(shape)
            assert get_args(hints["type"]) == (rtype,), shape.__name__
            assert "type" in shape.__required_keys__ and "seq" in shape.__optional_keys__
            # A reader must not need what a writer may leave out.
            assert RECORD_TYPES[rtype] <= shape.__required_keys__, shape.__name__


def test_the_writer_takes_exactly_the_shapes_of_the_schema():
    assert set(get_args(WireRecord)) == set(ALL_SHAPES)
    assert len(ALL_SHAPES) == len(set(ALL_SHAPES))


def test_the_import_fast_path_reads_the_fields_of_the_shape_its_state_names():
    blocked, preempted = (get_type_hints(s)["state"] for s in RECORD_SHAPES["wakeup"])
    assert get_args(blocked) == ("blocked",) and get_args(preempted) == ("preempted",)
    # The builder names fields in strings mypy cannot follow: they must be the shapes'.
    assert set(builder._BLOCKED_NAMES) <= BlockedWakeupRecord.__required_keys__
    assert set(builder._PREEMPTED_NAMES) <= PreemptedWakeupRecord.__required_keys__
    assert set(builder._BLOCKED_IDENTITY) <= BlockedWakeupRecord.__required_keys__
    assert set(builder._PREEMPTED_IDENTITY) <= (PreemptedWakeupRecord.__required_keys__
                                                | PreemptedWakeupRecord.__optional_keys__)


def test_the_checker_finds_a_forgotten_field_a_missing_one_and_a_wrong_type():
    good = {"type": "log", "seq": 3, "level": "info", "message": "ready"}
    assert record_problems(good) == []
    assert record_problems(dict(good, h1_new_field=1)) == [
        "LogRecord has 'h1_new_field', which the schema does not list"]
    assert record_problems({"type": "log", "level": "info"}) == [
        "LogRecord lacks required 'message'"]
    assert record_problems(dict(good, level="loud")) != []
    assert record_problems(dict(good, seq=True)) != []  # a bool is not an int
    assert record_problems({"type": "h1-future"}) != []
    stack = {"type": "stack", "id": 1, "frames": ["a", 2], "kernel_depth": 1}
    assert record_problems(stack) == ["StackRecord.frames[1] is int 2, not str"]


# -- what the collector's code writes ----------------------------------------------------------


class _FakeBPF:
    """bcc.BPF as the symbolizer uses it: kernel addresses to names."""

    @staticmethod
    def ksym(addr: int) -> bytes:
        return f"h1_kernel_{addr & 0xfff:x}".encode()


class _FakeProgram:
    """The collector's Program, as the Snapshotter reads it, with maps the test fills in."""

    bpf_cls = _FakeBPF
    sizes = MapSizes()
    own_ustacks = False  # as where the kernel walks user stacks: no unwind sites to write

    def __init__(self) -> None:
        self.edges: List[Edge] = []
        self.rows: List[OnCpuRow] = []
        self.queued: List[QueuedRow] = []
        self.waits: List[Waiting] = []

    def drain_edges(self) -> List[Edge]:
        out, self.edges = self.edges, []
        return out

    def drain_oncpu(self) -> List[OnCpuRow]:
        out, self.rows = self.rows, []
        return out

    def drain_queued(self) -> List[QueuedRow]:
        out, self.queued = self.queued, []
        return out

    def waiting(self) -> List[Waiting]:
        return self.waits

    def map_use(self) -> Dict[str, List[int]]:
        return {"start": [len(self.waits), self.sizes.start]}

    def kernel_ips(self, stack_id: int) -> Optional[List[int]]:
        return [0xFFFFFFFF81000000 + stack_id, 0xFFFFFFFF81000100] if stack_id >= 0 else None

    def user_stack(self, stack_id: int, waker: bool = False) -> Optional[UserStack]:
        """One frame; the preempted edge's stack (20) stopped at a frame-pointer loop."""
        if stack_id < 0:
            return None
        return UserStack([0x1000 + stack_id], truncated=stack_id == 20, cfi_frames=1)

    def add_sites(self, sites: Dict[Any, Any]) -> int:
        return 0

    def drop_sites(self, keys: List[Any]) -> None:
        pass

    def drain_new_wakers(self) -> List[Any]:
        return []


def _edge(state: int, kstack: int, **over: Any) -> Edge:
    pid, tid = os.getpid(), threading.get_native_id()
    fields: Dict[str, Any] = dict(
        tid=tid, tgid=pid, state=state, comm="h1-target", kstack=kstack, ustack=kstack,
        waker_tid=1, waker_tgid=1, waker_comm="h1-waker", waker_kstack=kstack + 1,
        waker_ustack=-14, preempt_pid=0, preempt_comm="", count=3, total_ns=9_000_000,
        max_ns=4_000_000, blocked_ns=8_000_000, runq_ns=1_000_000)
    fields.update(over)
    return Edge(**fields)


def _snapshotter_records() -> List[dict]:
    """A snapshot with both kinds of wakeup (one lost stack, one truncated among them),
    on-CPU time with a busy period, run-queue waits behind another process and behind an
    idle CPU, every kind of pending thread, including one asleep for the whole run, and
    the end record that counts the stacks' frames."""
    out = io.StringIO()
    program = _FakeProgram()
    pid, tid = os.getpid(), threading.get_native_id()
    started = time.monotonic()
    snap = Snapshotter(program, WireWriter(out), started, min_block_us=1.0)  # type: ignore[arg-type]
    snap.attached_mono = started
    program.edges = [
        _edge(ST_BLOCKED, 10),
        _edge(ST_BLOCKED, -17),  # a lost kernel stack: the stack record says what is missing
        _edge(ST_PREEMPTED, 20, preempt_pid=pid, preempt_comm="h1-hog"),
    ]
    program.rows = [OnCpuRow(tid, pid, "h1-target", 5, 50_000, 20_000, [0, 3, 2, 0, 0],
                             max_busy_ns=30_000)]
    program.queued = [
        QueuedRow(tid, pid, "h1-target", pid, pid, "h1-hog", 4, 8_000_000, 3_000_000),
        QueuedRow(tid, pid, "h1-target", 0, 0, "", 1, 20_000, 20_000),
    ]
    now = time.monotonic_ns()
    program.waits = [Waiting(tid, pid, "h1-target", state, now - 5_000_000, wake, 30, 30)
                     for state, wake in ((ST_BLOCKED, 0), (ST_BLOCKED, now), (ST_PREEMPTED, 0))]
    snap.take({"switch_out": 9, "wakeup": 8, "stack_eexist": 1, "queued_full": 2})
    asleep = threading.Event()
    sleeper = threading.Thread(target=asleep.wait, name="h1-sleeper", daemon=True)
    sleeper.start()
    try:
        time.sleep(0.05)  # until the thread is asleep (state S)
        snap.pending([pid], started)
    finally:
        asleep.set()
        sleeper.join()
    collector = collector_main.Collector(Options(pids=[pid]), out)
    collector._end("duration", {"switches": 9}, {}, frames=snap.frames.record())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _collector_records(tmp_path: Any) -> List[dict]:
    """A real collector run that fails (no such process) and what main writes for a target
    and for cgroup throttling, all through the collector's own functions."""
    out = io.StringIO()
    tree = tmp_path / "h1-headers"
    (tree / "include").mkdir(parents=True)
    (tree / "arch").mkdir()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:  # the collector takes over SIGTERM/SIGINT; they are pytest's again afterwards
        code = collector_main.main(["--pid", "999999999", "--headers", str(tree),
                                    "--node-name", "h1-node"], out=out)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 1
    collector = collector_main.Collector(Options(pids=[os.getpid()]), out)
    targets = resolve(pids=[os.getpid()]).targets
    collector.targets = targets
    collector.writer.emit(collector_main.target_record(targets))
    collector._cgroup_stats("start")
    # an Envoy-named target whose admin cannot be found: listeners only, and a log record
    envoy = EnvoyStatsReader.read_start([Target(pid=os.getpid(), comm="envoy", by="pid")],
                                        collector.log)
    envoy.finish(collector.writer.emit)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_what_the_collector_writes_fits_the_schema(tmp_path):
    records = _snapshotter_records() + _collector_records(tmp_path)
    problems = {f"{r['type']} #{i}": record_problems(r) for i, r in enumerate(records)}
    assert {k: v for k, v in problems.items() if v} == {}
    shapes = {matching_shape(r) for r in records}
    assert any(r["type"] == "hello" and r["map_sizes"]["--agg-size"] > 0 for r in records)
    # Every shape but the client's own records, so none goes unchecked.
    assert shapes == set(ALL_SHAPES) - set(RECORD_SHAPES["identity"]) \
        - set(RECORD_SHAPES["failure"]) - set(RECORD_SHAPES["client"])
    pending = [r for r in records if r["type"] == "pending"]
    assert {r["state"] for r in pending} == {"blocked", "runq", "preempted"}
    assert any(r.get("whole_run") for r in pending)
    assert any(r["type"] == "stack" and r.get("missing") for r in records)
    assert any(r["type"] == "oncpu" and r["max_busy_us"] == 30 for r in records)
    assert {r["holder_tid"] == 0 for r in records if r["type"] == "queued"} == {True, False}
    assert any(r["type"] == "progress" and r["lost"]["queued_full"] == 2 for r in records)
    assert any(r["type"] == "stack" and r["frames"][-1:] == [TRUNCATED_FRAME]
               for r in records)
    frames = [r["frames"] for r in records if r["type"] == "end" and "frames" in r]
    assert frames and frames[0]["truncated_stacks"] == 1 and frames[0]["user_cfi"] > 0


def test_a_failed_collector_says_why_in_the_end_record(tmp_path):
    records = [r for r in _collector_records(tmp_path) if r["type"] == "end"]
    assert records[0]["error"].startswith("no target process found")
    assert records[0]["error"] == records[0]["warnings"][-1]


def test_the_records_of_the_client_and_the_demo_fit_the_schema():
    process = ProcessInfo(42, "coredns", container_id="c" * 64)
    records = [
        identity_for(process, {"c" * 64: ("kube-system/coredns-5d78c", "coredns")}, {}, "n1"),
        identity_for(replace(process, container_id="d" * 64), {}, {}, "n1"),
        identity_for(replace(process, kernel_thread=True), {}, {}, None),
        client_record("kubectl offwake local"),
    ]

    class _Mesh:
        pids = {"kubelet": 11, "dnsmasq": 12}

    records += identity_records(_Mesh())  # type: ignore[arg-type]
    for record in records:
        assert record_problems(record) == [], record


@pytest.mark.parametrize("shape", [BlockedWakeupRecord, PreemptedWakeupRecord])
def test_a_wakeup_with_the_other_kinds_fields_is_neither_shape(shape):
    blocked = {"type": "wakeup", "snap": 1, "tid": 1, "pid": 1, "comm": "envoy",
               "state": "blocked", "target_stack": 1, "count": 1, "total_us": 5, "max_us": 5,
               "blocked_us": 5, "runq_us": 0, "waker_tid": 2, "waker_pid": 2,
               "waker_comm": "kubelet", "waker_stack": 2}
    mixed = dict(blocked, preempted_by_pid=3, preempted_by_comm="hog")
    assert shape_problems(mixed, shape) != []
    assert record_problems(blocked) == []

