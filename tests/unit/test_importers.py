"""The importers: wire records -> Recording, BCC offwaketime text and folded output, and
load_input's detection and error handling.

The captures under tests/data/offwaketime/ are printed exactly as BCC's print statements
print them (tools/offwaketime.py: 0.26 with and without -d, -K, lost stacks; the Python 3
bytes-literal era; the 2016 kernel-only form with addresses), for an Istio sidecar's Envoy:
kubelet's probe waking a worker over loopback TCP, swapper/0 waking the main thread from an
APIC timer interrupt, ksoftirqd, pilot-agent over a unix socket, an eventfd post, and a
preemption.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from kubectl_offwake.analysis.model import Edge, Recording, Task
from kubectl_offwake.errors import BadInput
from kubectl_offwake.importers import (
    RecordingBuilder,
    detect_format,
    load_bytes,
    load_input,
    load_text,
)
from kubectl_offwake.wire import read_records
from tests.unit.test_import_samples import (
    EDGES,
    ENVOY,
    KUBELET,
    KUBELET_TID,
    NOISY,
    PER_SNAPSHOT_US,
    STACKS,
    WORKER_0,
    WORKER_1,
    gzipped,
    recording_records,
    recording_text,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "offwaketime"
TOTAL_US = 18211 + 4899602 + 61344 + 902217 + 1499870 + 2066849


def _load(name: str) -> Recording:
    return load_input(str(DATA / name))


def _edge(recording: Recording, waker: Optional[str], target: str) -> Edge:
    found = [e for e in recording.edges
             if (e.waker.comm if e.waker else None) == waker and e.target.comm == target]
    assert len(found) == 1, [(e.waker, e.target) for e in recording.edges]
    return found[0]


def _in_order(frames, *names) -> bool:
    positions = [frames.index(n) for n in names]
    return positions == sorted(positions)


# -- wire recordings through the builder ----------------------------------------------------


def _built(snapshots: int = 2, end: bool = True) -> Recording:
    result = read_records(recording_text(snapshots, end).splitlines())
    builder = RecordingBuilder()
    for record in result.records:
        builder.add(record)
    return builder.finish()


def test_builder_turns_a_recording_into_the_model():
    rec = _built()
    assert rec.source["kind"] == "offwake"
    assert rec.source["node"] == "node-a" and rec.source["schema"] == 1
    assert rec.source["end_reason"] == "duration" and rec.source["elapsed_s"] == 10.0
    assert rec.source["target_by"] == "container"
    assert [t.pid for t in rec.targets] == [ENVOY]
    envoy = rec.processes[ENVOY]
    assert rec.targets[0] is envoy
    assert (envoy.pod, envoy.container, envoy.node) == ("app/productpage-v1-6b7f", "istio-proxy",
                                                        "node-a")
    assert envoy.threads[WORKER_0] == "wrk:worker_0"
    assert envoy.exe == "/usr/local/bin/envoy" and envoy.runtime == "containerd"
    assert rec.processes[KUBELET].label == "host: kubelet"
    assert rec.processes[0].kernel_thread
    assert rec.processes[9901].gone and not rec.processes[ENVOY].gone
    assert rec.totals == {"switches": 2100, "wakeups": 1900}
    assert rec.lost["stack_eexist"] == 2
    assert "2 stacks lost to hash collisions; raise --stack-storage" in rec.warnings
    assert rec.logs == [{"level": "info", "message": "kernel headers from bundled fallback"}]


def test_builder_merges_snapshot_deltas_of_one_edge():
    rec = _built(snapshots=3)
    assert len(rec.edges) == len(EDGES)
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.waker == Task("kubelet", KUBELET, KUBELET_TID)
    assert probe.target == Task("wrk:worker_0", ENVOY, WORKER_0)
    assert (probe.count, probe.total_us) == (3 * 98, 3 * 1033000)
    assert (probe.blocked_us, probe.runq_us) == (3 * 1025000, 3 * 8000)
    assert probe.max_us == 20500 + 3  # the largest of the three snapshots
    assert probe.waker_stack is not None
    assert probe.waker_stack.frames == tuple(STACKS[3][0])
    assert probe.waker_stack.kernel_depth == 35
    assert "tcp_data_queue" in probe.waker_stack.kernel_frames
    assert probe.waker_stack.user_frames[-1] == "runtime.goexit.abi0"


def test_builder_marks_preemptions_and_names_the_preemptor():
    rec = _built()
    preempted = [e for e in rec.edges if e.preempted]
    assert len(preempted) == 1
    edge = preempted[0]
    assert edge.waker is None and edge.waker_stack is None
    assert edge.preempted_by == Task("stress-ng-cpu", NOISY, None)
    assert edge.target.tid == WORKER_1 and edge.runq_us == 2 * 9100


def test_builder_oncpu_pending_and_throttling():
    rec = _built()
    assert len(rec.oncpu) == 1
    oncpu = rec.oncpu[0]
    assert oncpu.task.tid == WORKER_0
    assert (oncpu.count, oncpu.total_us, oncpu.max_us) == (200, 10000, 800)
    assert oncpu.hist_log2_us == [0, 20, 120, 60]
    assert len(rec.pending) == 1 and rec.pending[0].waiting_us == 10000000
    assert rec.pending[0].whole_run and not rec.pending[0].preempted
    assert rec.pending[0].stack.frames[0] == "finish_task_switch.isra.0"
    assert len(rec.throttling) == 1
    throttling = rec.throttling[0]
    assert throttling.delta("nr_throttled") == 37
    assert throttling.delta("throttled_usec") == 900000


def test_builder_is_incremental_and_always_current():
    builder = RecordingBuilder()
    result = read_records(recording_text(snapshots=2).splitlines())
    edges_seen = []
    for record in result.records:
        builder.add(record)
        if record["type"] == "snapshot":
            edges_seen.append(sum(e.total_us for e in builder.recording.edges))
    per_snapshot = PER_SNAPSHOT_US
    assert edges_seen == [per_snapshot, 2 * per_snapshot]
    assert builder.snapshots == 2 and builder.ended
    assert builder.progress is not None and builder.progress["elapsed_s"] == 10.0


def test_builder_keeps_latest_progress_losses_until_end():
    builder = RecordingBuilder()
    for rtype, fields in recording_records(snapshots=2, end=False):
        builder.add({"type": rtype, **fields})
    assert builder.recording.lost == {"stack_eexist": 2, "stack_enomem": 0, "map_full": 0}
    assert builder.recording.source["elapsed_s"] == 10.0
    assert "end_reason" not in builder.recording.source


def test_unknown_stack_id_gets_a_placeholder_and_a_warning():
    builder = RecordingBuilder()
    builder.add({"type": "hello", "schema": 1})
    builder.add({"type": "stack", "id": 1, "frames": ["schedule"], "kernel_depth": 1})
    for _ in range(2):
        builder.add({"type": "wakeup", "tid": 7, "pid": 7, "comm": "wrk:worker_0",
                     "target_stack": 1, "waker_stack": 99, "waker_comm": "kubelet",
                     "waker_tid": 606, "total_us": 10, "count": 1})
    rec = builder.finish()
    assert len(rec.edges) == 1
    edge = rec.edges[0]
    assert edge.waker_stack is not None
    assert edge.waker_stack.frames == ("[unknown stack 99]",)
    assert edge.waker_stack.missing == "both"
    assert edge.total_us == 20 and edge.count == 2
    assert any("2 record(s) referred to 1 stack id(s)" in w for w in rec.warnings)
    # finish() again does not repeat its warnings
    assert len(builder.finish().warnings) == len(rec.warnings)


def test_equal_stacks_under_different_ids_merge_into_one_edge():
    builder = RecordingBuilder()
    builder.add({"type": "stack", "id": 1, "frames": ["schedule", "ep_poll"], "kernel_depth": 2})
    builder.add({"type": "stack", "id": 2, "frames": ["schedule", "ep_poll"], "kernel_depth": 2})
    for stack_id in (1, 2):
        builder.add({"type": "wakeup", "tid": 7, "comm": "envoy", "target_stack": stack_id,
                     "total_us": 5})
    rec = builder.finish()
    assert len(rec.edges) == 1 and rec.edges[0].total_us == 10
    assert rec.edges[0].key() == Edge(Task("envoy", None, 7), rec.edges[0].target_stack, None,
                                      None, 0).key()


def test_records_with_wrong_field_types_are_skipped_not_fatal():
    builder = RecordingBuilder()
    builder.add({"type": "stack", "id": 1, "frames": ["schedule"]})
    builder.add({"type": "wakeup", "tid": 7, "comm": "envoy", "target_stack": 1,
                 "total_us": "lots"})
    builder.add({"type": "wakeup", "tid": [7], "comm": "envoy", "target_stack": 1,
                 "total_us": 3})
    builder.add({"type": "process", "pid": "x", "comm": "envoy"})
    builder.add({"type": "wakeup", "tid": 7, "comm": "envoy", "target_stack": 1, "total_us": 4})
    builder.add({"type": "h1-unknown", "whatever": 1})
    rec = builder.finish()
    assert [e.total_us for e in rec.edges] == [4]
    assert "skipped 3 record(s) with fields of the wrong type" in rec.warnings


def test_identity_before_process_keeps_both():
    builder = RecordingBuilder()
    builder.add({"type": "identity", "pid": 42, "pod": "kube-system/coredns-5d78c",
                 "container": "coredns"})
    builder.add({"type": "process", "pid": 42, "comm": "coredns", "container_id": "abc"})
    info = builder.finish().processes[42]
    assert (info.comm, info.pod, info.container, info.container_id) == (
        "coredns", "kube-system/coredns-5d78c", "coredns", "abc")


# -- load_input on wire recordings ----------------------------------------------------------


def test_load_input_reads_plain_and_gzip_recordings(tmp_path):
    plain = tmp_path / "h1-rec.jsonl"
    plain.write_text(recording_text())
    packed = tmp_path / "h1-rec.jsonl.gz"
    packed.write_bytes(gzipped(recording_text()))
    a, b = load_input(str(plain)), load_input(str(packed))
    assert a.source["kind"] == b.source["kind"] == "offwake"
    assert [(e.key(), e.total_us) for e in a.edges] == [(e.key(), e.total_us) for e in b.edges]
    assert len(a.edges) == len(EDGES)
    assert a.warnings == b.warnings == ["2 stacks lost to hash collisions; raise --stack-storage"]


def test_load_input_reads_stdin(monkeypatch):
    class _Stdin:
        buffer = io.BytesIO(gzipped(recording_text()))

    monkeypatch.setattr(sys, "stdin", _Stdin())
    rec = load_input("-")
    assert len(rec.edges) == len(EDGES)


def test_truncated_gzip_recording_keeps_whole_snapshots_and_warns(tmp_path):
    data = gzipped(recording_text(snapshots=8))
    path = tmp_path / "h1-cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    rec = load_input(str(path))
    assert rec.warnings[0].startswith("the compressed input is truncated")
    assert any("stops mid-snapshot" in w or "no 'end' record" in w for w in rec.warnings)
    assert "end_reason" not in rec.source
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.count is not None and probe.count % 98 == 0 and probe.count >= 98


def test_garbage_line_in_a_recording_loses_nothing_else(tmp_path):
    lines = recording_text().splitlines()
    lines.insert(len(lines) // 2, "\x1b[31m not json at all")
    path = tmp_path / "h1-damaged.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rec = load_input(str(path))
    assert sum(e.total_us for e in rec.edges) == 2 * PER_SNAPSHOT_US
    assert "skipped 1 malformed record(s)" in rec.warnings


def test_chatter_before_the_hello_is_skipped_with_a_warning():
    text = "Defaulted container \"collector\" out of: collector\n" + recording_text()
    rec = load_text(text, "h1-kubectl-logs")
    assert len(rec.edges) == len(EDGES)
    assert "ignored 1 line(s) of other output before the recording" in rec.warnings


def test_newer_schema_is_bad_input(tmp_path):
    path = tmp_path / "h1-future.jsonl"
    path.write_text(json.dumps({"type": "hello", "seq": 1, "schema": 99}) + "\n")
    with pytest.raises(BadInput, match=r"wire schema 99 .*upgrade kubectl-offwake") as info:
        load_input(str(path))
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n   \n", "is empty"),
        (gzip.compress(b""), "empty gzip"),
        (gzipped(recording_text())[:12], "before any data"),
        (random.Random(7).randbytes(3000), "binary data"),
        (b"hello world\nthis is a shopping list\n", "neither a kubectl-offwake recording"),
        (b'{"schema": "offwake.report/1", "wakeups": []}\n', "not a wire record"),
        (b'{"type": "wakeup", "seq": 1}\n', "instead of 'hello'"),
        (b"Tracing blocked time (us) by user + kernel off-CPU and waker stack... "
         b"Hit Ctrl-C to end.\n\n", "without any stacks"),
        (b"wrk:worker_0;schedule;--;x;waker 12O\nfoo;bar;--;baz;w -1\n", "neither"),
        (b"envoy;epoll_wait;schedule 120\nenvoy;futex_wait;schedule 80\n",
         "none of the 2 line"),
        (b"Tracing off-CPU time (us) of all threads by user + kernel stack... Hit Ctrl-C "
         b"to end.\n\n    finish_task_switch\n    schedule\n    epoll_wait\n"
         b"    -                envoy (4182)\n        5012\n\n", "offcputime output"),
    ],
    ids=["empty", "blank", "empty-gzip", "gzip-cut-in-header", "random-bytes", "prose",
         "report-json", "no-hello", "banner-only", "bad-values", "offcputime-folded",
         "offcputime-text"],
)
def test_bad_inputs_raise_one_sentence(tmp_path, content, message):
    path = tmp_path / "h1-bad.input"
    path.write_bytes(content)
    with pytest.raises(BadInput) as info:
        load_input(str(path))
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text and text.count(". ") == 0 and ";" in text


def test_missing_path_and_directory_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        load_input(str(tmp_path / "h1-nope.jsonl"))
    with pytest.raises(BadInput, match="is a directory"):
        load_input(str(tmp_path))


# -- BCC offwaketime text --------------------------------------------------------------------


def test_text_user_kernel_capture():
    rec = _load("text_user_kernel.txt")
    assert rec.source["kind"] == "offwaketime-text"
    assert rec.source["duration_s"] == 10 and rec.source["stacks"] == "user + kernel"
    assert rec.warnings == []
    assert len(rec.edges) == 6
    assert sum(e.total_us for e in rec.edges) == TOTAL_US
    for edge in rec.edges:  # BCC has no counts, tgids or split
        assert edge.count is edge.max_us is edge.blocked_us is edge.runq_us is None
        assert edge.target.pid is None
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.waker == Task("kubelet", None, 606)
    assert probe.target == Task("wrk:worker_0", None, 4450)
    assert probe.total_us == 2066849
    waker = probe.waker_stack
    assert waker is not None and waker.kernel_depth is None and waker.missing is None
    # leaf first: the wake, then the softirq that kubelet's own transmit ran, then user space
    assert waker.frames[0] == "ep_autoremove_wake_function"
    assert _in_order(waker.frames, "sock_def_readable", "tcp_data_queue", "tcp_v4_rcv",
                     "process_backlog", "net_rx_action", "do_softirq", "__local_bh_enable_ip",
                     "ip_finish_output2", "entry_SYSCALL_64_after_hwframe", "syscall.write",
                     "runtime.goexit.abi0")
    assert waker.frames[-1] == "runtime.goexit.abi0"
    target = probe.target_stack
    assert target.frames[:3] == ("finish_task_switch.isra.0", "__schedule", "schedule")
    assert _in_order(target.frames, "ep_poll", "entry_SYSCALL_64_after_hwframe", "epoll_wait",
                     "start_thread")
    assert "[unknown]" in target.frames


def test_text_timer_interrupt_and_preemption_blocks():
    rec = _load("text_user_kernel.txt")
    timer = _edge(rec, "swapper/0", "envoy")
    assert timer.waker == Task("swapper/0", None, 0)
    assert timer.waker_stack is not None
    assert timer.waker_stack.frames[0] == "hrtimer_wakeup"
    assert _in_order(timer.waker_stack.frames, "hrtimer_wakeup", "hrtimer_interrupt",
                     "asm_sysvec_apic_timer_interrupt", "do_idle",
                     "secondary_startup_64_no_verify")
    preempted = [e for e in rec.edges if e.preempted]
    assert len(preempted) == 1
    edge = preempted[0]
    assert edge.waker is None and edge.waker_stack is None and edge.preempted_by is None
    assert edge.target == Task("wrk:worker_1", None, 4451) and edge.total_us == 18211
    assert "exit_to_user_mode_loop" in edge.target_stack.frames


def test_text_delimited_sets_kernel_depth():
    rec = _load("text_delimited.txt")
    assert rec.source["delimited"] is True
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.waker_stack is not None
    assert probe.waker_stack.kernel_frames[0] == "ep_autoremove_wake_function"
    assert probe.waker_stack.kernel_frames[-1] == "entry_SYSCALL_64_after_hwframe"
    assert probe.waker_stack.user_frames == (
        "syscall.Syscall", "syscall.write", "internal/poll.(*FD).Write", "net.(*netFD).Write",
        "net.(*conn).Write", "bufio.(*Writer).Flush", "net/http.persistConnWriter.Write",
        "net/http.(*persistConn).writeLoop", "runtime.goexit.abi0")
    assert probe.target_stack.kernel_depth == 9
    assert probe.target_stack.user_frames[0] == "epoll_wait"
    # kernel threads have no user stack, so BCC prints no delimiter: all kernel frames
    timer = _edge(rec, "swapper/0", "envoy")
    assert timer.waker_stack is not None
    assert timer.waker_stack.kernel_depth == len(timer.waker_stack.frames) == 17
    # the "^C" a terminal echoed after the banner is not a corrupt block
    assert rec.warnings == []


def test_text_lost_stacks_set_missing_and_keep_the_warning():
    rec = _load("text_missed_stacks.txt")
    assert rec.warnings == ["offwaketime: 3 stack traces lost and could not be displayed. "
                            "Consider increasing --stack-storage-size."]
    post = _edge(rec, "envoy", "wrk:worker_1")
    assert post.waker_stack is not None and post.waker_stack.missing == "user"
    assert post.waker_stack.kernel_depth == len(post.waker_stack.frames) == 13
    assert not any(f.startswith("[Missed") for e in rec.edges
                   for s in (e.waker_stack, e.target_stack) if s for f in s.frames)
    xds = _edge(rec, "pilot-agent", "envoy")
    assert xds.target_stack.missing == "user" and xds.target_stack.user_frames == ()
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.waker_stack is not None
    assert probe.waker_stack.missing == "kernel" and probe.waker_stack.kernel_depth == 0
    assert probe.waker_stack.frames[0] == "syscall.Syscall"


def test_text_python3_bytes_literals_are_unquoted():
    rec = _load("text_bytes_literals.txt")
    frames = [f for e in rec.edges for s in (e.waker_stack, e.target_stack) if s
              for f in s.frames]
    assert frames and not any(f.startswith(("b'", 'b"')) for f in frames)
    assert "tcp_data_queue" in frames and "[unknown]" in frames
    assert sum(e.total_us for e in rec.edges) == TOTAL_US
    # The BCC of that era printed the two pids swapped; the importer keeps what was printed.
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert (probe.waker.tid if probe.waker else None, probe.target.tid) == (4450, 606)
    # "[Missed User Stack]" without the error number, in the user position: kernel half known
    post = _edge(rec, "envoy", "wrk:worker_1")
    assert post.waker_stack is not None
    assert post.waker_stack.missing == "user" and post.waker_stack.kernel_depth == 13


def test_text_kernel_only_banner_means_all_frames_are_kernel():
    rec = _load("text_kernel_only.txt")
    assert rec.source["stacks"] == "kernel"
    for edge in rec.edges:
        for stack in (edge.waker_stack, edge.target_stack):
            if stack is not None:
                assert stack.kernel_depth == len(stack.frames) > 0


def test_text_2016_form_with_addresses_and_no_pids():
    rec = _load("text_legacy_2016.txt")
    assert len(rec.edges) == 3 and rec.warnings == []
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.waker == Task("kubelet", None, None)
    assert probe.waker_stack is not None
    assert probe.waker_stack.frames[0] == "ep_poll_callback"
    assert probe.waker_stack.frames[-1] == "entry_SYSCALL_64_fastpath"
    assert probe.waker_stack.kernel_depth == len(probe.waker_stack.frames)
    assert probe.target_stack.frames == ("schedule", "schedule_hrtimeout_range_clock",
                                         "schedule_hrtimeout_range", "ep_poll",
                                         "sys_epoll_wait", "entry_SYSCALL_64_fastpath")
    preempted = [e for e in rec.edges if e.preempted]
    assert len(preempted) == 1 and preempted[0].total_us == 2816


def test_text_corrupt_blocks_are_skipped_and_counted():
    rec = _load("text_corrupt_blocks.txt")
    assert rec.warnings == ["skipped 4 corrupt block(s)"]
    assert sorted((e.waker.comm if e.waker else "") for e in rec.edges) == [
        "", "ksoftirqd/1", "pilot-agent"]
    assert sum(e.total_us for e in rec.edges) == 18211 + 61344 + 1499870


def test_text_comm_with_spaces_and_repeated_blocks_merge():
    block = (
        "    waker:           GC Thread#0 4711\n"
        "    futex_wake\n"
        "    --               --\n"
        "    schedule\n"
        "    futex_wait\n"
        "    target:          AccessLog Flush 4500\n"
        "        100\n\n"
    )
    rec = load_text(block + block, "h1-inline")
    assert len(rec.edges) == 1
    edge = rec.edges[0]
    assert edge.waker == Task("GC Thread#0", None, 4711)
    assert edge.target == Task("AccessLog Flush", None, 4500)
    assert edge.total_us == 200


def test_gzip_text_capture_reads_like_plain(tmp_path):
    raw = (DATA / "text_user_kernel.txt").read_bytes()
    path = tmp_path / "h1-capture.txt.gz"
    path.write_bytes(gzip.compress(raw))
    a, b = load_bytes(raw, "a"), load_input(str(path))
    assert [(e.key(), e.total_us) for e in a.edges] == [(e.key(), e.total_us) for e in b.edges]


def test_truncated_gzip_text_capture_keeps_whole_blocks(tmp_path):
    raw = (DATA / "text_user_kernel.txt").read_bytes()
    packed = gzip.compress(raw)
    path = tmp_path / "h1-capture-cut.txt.gz"
    path.write_bytes(packed[: len(packed) - 200])
    rec = load_input(str(path))
    assert rec.warnings[0].startswith("the compressed input is truncated")
    assert "skipped 1 corrupt block(s)" in rec.warnings
    assert 1 <= len(rec.edges) < 6


# -- BCC offwaketime -f (folded) -------------------------------------------------------------


def _by_pair(rec: Recording) -> Dict[tuple, Edge]:
    return {((e.waker.comm if e.waker else None), e.target.comm, e.total_us): e
            for e in rec.edges}


@pytest.mark.parametrize(("text_name", "folded_name"), [
    ("text_user_kernel.txt", "folded.txt"),
    ("text_delimited.txt", "folded_delimited.txt"),
    ("text_missed_stacks.txt", "folded_missed_stacks.txt"),
])
def test_folded_matches_text_of_the_same_trace(text_name, folded_name):
    text, folded = _load(text_name), _load(folded_name)
    assert folded.source["kind"] == "offwaketime-folded"
    assert text.source["delimited"] == folded.source["delimited"]
    pairs_t, pairs_f = _by_pair(text), _by_pair(folded)
    assert pairs_t.keys() == pairs_f.keys()
    for key, t in pairs_t.items():
        f = pairs_f[key]
        assert f.target.tid is None  # folded output has no pids
        assert f.preempted == t.preempted
        # Waker stacks are printed whole in both forms.
        assert (f.waker_stack is None) == (t.waker_stack is None)
        if t.waker_stack is not None and f.waker_stack is not None:
            assert f.waker_stack == t.waker_stack
        # Folded drops the leaf frame of each target half (BCC's walk()[1:]).
        ts, fs = t.target_stack, f.target_stack
        assert ts.missing == fs.missing
        if ts.kernel_depth is None:
            assert fs.kernel_depth is None and fs.frames[0] == ts.frames[1]
        else:
            assert fs.kernel_frames == ts.kernel_frames[1:]
            assert fs.user_frames == ts.user_frames[1:]
    assert folded.warnings == text.warnings


def test_folded_delimited_halves():
    rec = _load("folded_delimited.txt")
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.target_stack.kernel_frames[0] == "__schedule"
    assert probe.target_stack.kernel_frames[-1] == "entry_SYSCALL_64_after_hwframe"
    assert probe.target_stack.user_frames == (
        "epoll_dispatch", "event_base_loop",
        "Envoy::Event::DispatcherImpl::run(Envoy::Event::Dispatcher::RunType)",
        "Envoy::Server::WorkerImpl::threadRoutine(Envoy::Server::GuardDog&, "
        "std::function<void ()> const&)",
        "[unknown]", "start_thread")


def test_folded_preemption_has_no_waker():
    rec = _load("folded.txt")
    edge = [e for e in rec.edges if e.preempted]
    assert len(edge) == 1 and edge[0].waker is None and edge[0].total_us == 18211
    assert edge[0].target == Task("wrk:worker_1", None, None)


def test_folded_bytes_literals_are_unquoted():
    a, b = _load("folded.txt"), _load("folded_bytes_literals.txt")
    assert [(e.key(), e.total_us) for e in a.edges] == [(e.key(), e.total_us) for e in b.edges]


def test_folded_2016_form_uses_dash_as_separator():
    rec = _load("folded_legacy_2016.txt")
    assert len(rec.edges) == 3 and rec.warnings == []
    probe = _edge(rec, "kubelet", "wrk:worker_0")
    assert probe.waker_stack is not None
    assert probe.waker_stack.frames[0] == "ep_poll_callback"
    assert probe.waker_stack.frames[-1] == "entry_SYSCALL_64_fastpath"  # the empty frame dropped
    assert probe.waker_stack.kernel_depth == len(probe.waker_stack.frames)
    assert probe.target_stack.frames[0] == "schedule"
    text = _load("text_legacy_2016.txt")
    assert sorted(e.total_us for e in rec.edges) == sorted(e.total_us for e in text.edges)


def test_folded_corrupt_lines_are_skipped_and_counted():
    rec = _load("folded_corrupt_lines.txt")
    assert rec.warnings == ["skipped 4 corrupt block(s)"]
    assert sorted(e.total_us for e in rec.edges) == [18211, 61344, 902217, 1499870]


def test_folded_comm_with_spaces_and_old_spelled_out_marker():
    line = ("AccessLog Flush;start_thread;-;schedule;--;futex_wake;-;"
            + ";".join("[Missed User Stack]") + ";GC Thread#0 250\n")
    rec = load_text(line, "h1-inline")
    edge = rec.edges[0]
    assert edge.target.comm == "AccessLog Flush" and edge.waker is not None
    assert edge.waker.comm == "GC Thread#0" and edge.total_us == 250
    assert edge.waker_stack is not None
    assert edge.waker_stack.frames == ("futex_wake",) and edge.waker_stack.missing == "user"


def test_detect_format():
    assert detect_format('{"type":"hello","schema":1}\n') == "wire"
    assert detect_format((DATA / "text_legacy_2016.txt").read_text()) == "offwaketime-text"
    assert detect_format((DATA / "folded.txt").read_text()) == "offwaketime-folded"
    assert detect_format("just words\n") is None


@pytest.mark.parametrize("name", ["text_user_kernel.txt", "folded.txt"])
def test_stderr_warning_landing_mid_frame_is_lifted_out(name):
    # `offwaketime 2>&1 > file`: stdout is block-buffered, stderr is not, so BCC's final
    # WARNING line can land inside a frame of the stacks printed before it.
    text = (DATA / name).read_text()
    at = text.index("tcp_v4_rcv") + 5
    warning = "WARNING: 2 stack traces could not be displayed. " \
              "Consider increasing --stack-storage-size.\n"
    damaged = load_text(text[:at] + warning + text[at:], "h1-interleaved")
    clean = load_text(text, "h1-clean")
    assert [(e.key(), e.total_us) for e in damaged.edges] == [
        (e.key(), e.total_us) for e in clean.edges]
    assert damaged.warnings == ["offwaketime: 2 stack traces could not be displayed. "
                                "Consider increasing --stack-storage-size."]


def test_damaged_gzip_keeps_what_precedes_the_damage(tmp_path):
    raw = (DATA / "folded.txt").read_bytes() * 40  # long enough for several deflate blocks
    packed = bytearray(gzip.compress(raw))
    packed[len(packed) - 30] ^= 0xFF  # damage near the end
    path = tmp_path / "h1-damaged.folded.gz"
    path.write_bytes(bytes(packed))
    rec = load_input(str(path))
    assert rec.warnings[0].startswith(("the compressed input is damaged",
                                       "the compressed input is truncated"))
    assert rec.edges and sum(e.total_us for e in rec.edges) <= 40 * TOTAL_US


def test_concatenated_gzip_members_are_all_read(tmp_path):
    raw = (DATA / "folded.txt").read_bytes()
    path = tmp_path / "h1-two-members.folded.gz"
    path.write_bytes(gzip.compress(raw) + gzip.compress(raw))
    rec = load_input(str(path))
    assert rec.warnings == []
    assert sum(e.total_us for e in rec.edges) == 2 * TOTAL_US


def test_builder_sums_queued_waits_per_holder_and_keeps_the_longest_busy_period():
    """``queued`` deltas add up per (thread, holder); holder tid 0 is the idle CPU; the
    longest busy period is the maximum over snapshots, absent when no record had one."""
    builder = RecordingBuilder()
    hog = {"holder_tid": 77, "holder_pid": 77, "holder_comm": "cpu-hog"}
    worker = {"tid": WORKER_0, "pid": ENVOY, "comm": "wrk:worker_0"}
    for snap in (1, 2):
        builder.add({"type": "queued", "snap": snap, **worker, **hog, "count": 3,
                     "wait_us": 900 * snap, "max_us": 400 * snap})
        builder.add({"type": "oncpu", "snap": snap, **worker, "count": 1, "total_us": 10,
                     "max_us": 10, "max_busy_us": 250_000 // snap})
    builder.add({"type": "queued", "snap": 2, **worker, "holder_tid": 0, "holder_pid": 0,
                 "holder_comm": "", "count": 5, "wait_us": 20, "max_us": 6})
    builder.add({"type": "oncpu", "snap": 1, "tid": 9, "pid": ENVOY, "comm": "envoy",
                 "count": 1, "total_us": 5, "max_us": 5})
    rec = builder.finish()
    by_holder = {(q.holder.comm if q.holder else None): q for q in rec.queued}
    assert set(by_holder) == {"cpu-hog", None}
    assert (by_holder["cpu-hog"].count, by_holder["cpu-hog"].wait_us,
            by_holder["cpu-hog"].max_us) == (6, 2700, 800)
    assert by_holder["cpu-hog"].holder == Task("cpu-hog", 77, 77)
    assert by_holder[None].wait_us == 20
    busy = {o.task.comm: o.max_busy_us for o in rec.oncpu}
    assert busy == {"wrk:worker_0": 250_000, "envoy": None}
