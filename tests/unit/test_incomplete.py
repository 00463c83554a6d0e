"""A failed collector makes an incomplete recording, and every format says so.

The recording model carries ``failures`` (source → the sentence naming it and why): the
importer sets it from an ``end`` in error or from a ``failure`` record the client wrote,
the fleet keeps it per pod and merges it across nodes, and the table, JSON and HTML show
it — never "Nothing stands out" over a failed or empty trace.
"""

from __future__ import annotations

import io
import json
from typing import List

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Edge, ProcessInfo, Recording, Task
from kubectl_offwake.analysis.recordings import merge, split_by_pod
from kubectl_offwake.importers import parse_wire
from kubectl_offwake.render import RenderOptions, render

NODE = "lab-node-1"
NO_BCC = ("/usr/bin/python3 cannot import bcc; install python3-bpfcc (Debian/Ubuntu) or "
          "bcc-python3 and run the collector with it")


def _stream(*records: dict) -> str:
    lines = [{"type": "hello", "seq": 1, "schema": 1, "node": NODE, "interval_s": 2}]
    lines += [{"seq": i + 2, **r} for i, r in enumerate(records)]
    return "".join(json.dumps(r) + "\n" for r in lines)


def _traced() -> List[dict]:
    """A target, two stacks and one committed snapshot of one wakeup."""
    return [
        {"type": "target", "processes": [{"pid": 40, "comm": "envoy"}], "by": "container"},
        {"type": "stack", "id": 1, "frames": ["schedule", "ep_poll"], "kernel_depth": 2},
        {"type": "stack", "id": 2, "frames": ["try_to_wake_up", "unix_stream_sendmsg"],
         "kernel_depth": 2},
        {"type": "wakeup", "snap": 1, "tid": 40, "pid": 40, "comm": "envoy",
         "state": "blocked", "waker_tid": 7, "waker_pid": 7, "waker_comm": "pilot-agent",
         "target_stack": 1, "waker_stack": 2, "count": 5, "total_us": 900, "max_us": 300,
         "blocked_us": 880, "runq_us": 20},
        {"type": "snapshot", "snap": 1, "elapsed_s": 2.0},
    ]


def _render(recording: Recording, fmt: str) -> str:
    out = io.StringIO()
    render(analyze(recording), fmt, out, RenderOptions())
    return out.getvalue()


def test_the_story_of_issue_7_is_a_failure_not_an_all_clear():
    """A collector whose python has no BCC: hello, target, the error, ``end`` in error."""
    recording = parse_wire(_stream(
        {"type": "target", "processes": [{"pid": 40, "comm": "envoy"}], "by": "container"},
        {"type": "log", "level": "error", "message": NO_BCC},
        {"type": "end", "reason": "error", "elapsed_s": 0.3, "totals": {}, "lost": {},
         "warnings": [NO_BCC], "error": NO_BCC},
    ))
    sentence = f"the collector on node {NODE} failed: {NO_BCC}"
    assert recording.failures == {NODE: sentence}
    assert not recording.complete and not recording.has_data  # nothing to report: exit 1
    table = " ".join(_render(recording, "table").split())  # as read, whatever the wrapping
    assert f"Incomplete: {sentence}" in table
    assert "Nothing stands out" not in table
    assert "the trace is incomplete" in table


def test_the_reason_is_the_ends_error_not_a_guess_from_logs_or_warnings():
    recording = parse_wire(_stream(
        *_traced(),
        {"type": "log", "level": "error", "message": "the collector failed mid-trace: boom"},
        {"type": "end", "reason": "error", "elapsed_s": 3.0, "totals": {}, "lost": {},
         "warnings": ["the trace stopped early: boom", "12 stacks lost to hash collisions"],
         "error": "the trace stopped early: boom"},
    ))
    assert recording.failures == {
        NODE: f"the collector on node {NODE} failed: the trace stopped early: boom"}
    assert recording.has_data


def test_an_error_end_without_its_sentence_is_still_a_failure():
    """A writer that leaves ``error`` out (it is optional in the schema) still fails the
    recording; the reason is not guessed from its logs."""
    recording = parse_wire(_stream(
        *_traced(),
        {"type": "log", "level": "error", "message": "something"},
        {"type": "end", "reason": "error", "elapsed_s": 3.0, "totals": {}, "lost": {},
         "warnings": []},
    ))
    assert recording.failures == {
        NODE: f"the collector on node {NODE} failed: it gave no reason"}


def test_a_failure_record_of_the_client_names_what_the_stream_could_not():
    oom = f"the collector on node {NODE} ran out of memory (OOMKilled); trace fewer pods"
    recording = parse_wire(_stream(*_traced(), {"type": "failure", "source": NODE,
                                                "reason": oom}))
    assert recording.failures == {NODE: oom}
    assert [e.count for e in recording.edges] == [5]  # what came before is all there


def test_a_clean_end_is_complete():
    recording = parse_wire(_stream(*_traced(), {"type": "end", "reason": "duration",
                                                "elapsed_s": 2.0, "totals": {}, "lost": {},
                                                "warnings": []}))
    assert recording.complete and recording.failures == {}
    assert "Incomplete" not in _render(recording, "table")
    source = json.loads(_render(recording, "json"))["source"]
    assert source["complete"] is True and source["failures"] == []


def _node(node: str, pid: int, pod: str) -> Recording:
    rec = Recording(source={"node": node})
    stack = rec.stacks.intern(("schedule", "epoll_wait"), 2)
    info = ProcessInfo(pid=pid, comm="envoy", pod=pod, container="istio-proxy")
    rec.processes[pid] = info
    rec.targets.append(info)
    rec.edges.append(Edge(Task("envoy", pid, pid), stack, None, None, 100, count=1))
    return rec


def test_failures_survive_the_fleet_split_and_merge():
    good, bad = _node("n1", 10, "app/a"), _node("n2", 20, "app/b")
    bad.failures["n2"] = "the collector on node n2 exited with code 139 (killed by SIGSEGV)"
    assert split_by_pod(bad)["app/b"].failures == bad.failures
    assert split_by_pod(good)["app/a"].failures == {}
    merged = merge([good, bad], ["n1", "n2"])
    assert merged.failures == bad.failures and not merged.complete


def test_every_format_marks_an_incomplete_report():
    recording = _node("n2", 20, "app/b")
    sentence = "node n2 cannot pull the collector image registry.invalid/x:1 (ErrImagePull)"
    recording.failures["n2"] = sentence
    table = _render(recording, "table")
    assert table.splitlines()[2] == f"Incomplete: {sentence}"
    report = json.loads(_render(recording, "json"))
    assert report["source"]["complete"] is False
    assert report["source"]["failures"] == [{"source": "n2", "reason": sentence}]
    html = _render(recording, "html")
    assert '<section id="incomplete"><h2>Incomplete trace</h2>' in html
    assert "cannot pull the collector image registry.invalid/x:1" in html
    assert "No findings: nothing in this trace matched" not in html


def test_an_empty_trace_is_not_an_all_clear_either():
    recording = parse_wire(_stream(
        {"type": "target", "processes": [{"pid": 40, "comm": "envoy"}], "by": "container"},
        {"type": "snapshot", "snap": 1, "elapsed_s": 2.0},
        {"type": "end", "reason": "duration", "elapsed_s": 2.0, "totals": {}, "lost": {},
         "warnings": []},
    ))
    assert recording.complete and not recording.has_data
    table = _render(recording, "table")
    assert "Nothing stands out" not in table and "Nothing to judge" in table
    assert "Nothing to judge" in _render(recording, "html")
