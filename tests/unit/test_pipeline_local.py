"""The local run's plumbing (pipeline.local and its sink), driven by a stand-in collector.

The stand-in is a small script writing wire records (the real collector needs root and
BCC; tests/integration/test_local.py runs that one). These tests check what the runner
itself promises: the recording is saved as records arrive and stays readable, client
annotations land right after ``hello``, stray non-JSON output stays out of the
recording, a stop request gets the final snapshot, and failures are one sentence.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.errors import RunFailed
from kubectl_offwake.importers import load_input
from kubectl_offwake.live import LiveProgress
from kubectl_offwake.pipeline.local import (
    CollectorCommand,
    CollectorRun,
    collector_command,
    find_collector_python,
    raise_if_incomplete,
)
from kubectl_offwake.pipeline.sink import StreamSink
from kubectl_offwake.render import RenderOptions, render

FAKE = textwrap.dedent(r'''
    import json, signal, sys, time
    mode = sys.argv[1]
    seq = 0
    def emit(kind, **fields):
        global seq
        seq += 1
        print(json.dumps({"type": kind, "seq": seq, **fields}), flush=True)
    if mode == "crash-early":
        print("Traceback: boom in the collector", file=sys.stderr, flush=True)
        sys.exit(3)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    emit("hello", schema=1, interval_s=0.1, duration_s=30)
    print("WARNING: Linux version for eBPF program is being overridden", flush=True)
    emit("target", processes=[{"pid": 4242, "comm": "envoy"}], by="pid")
    emit("stack", id=1, frames=["__schedule", "epoll_wait"], kernel_depth=1)
    emit("stack", id=2, frames=["try_to_wake_up", "unix_stream_sendmsg"], kernel_depth=2)
    snap = 0
    while not stop:
        snap += 1
        emit("wakeup", snap=snap, tid=4242, pid=4242, comm="envoy", state="blocked",
             waker_tid=77, waker_pid=77, waker_comm="pilot-agent", target_stack=1,
             waker_stack=2, count=3, total_us=300, max_us=120, blocked_us=290, runq_us=10)
        emit("progress", elapsed_s=snap * 0.1, switches=snap * 3, wakeups=snap * 3,
             edges=snap, lost={"stack_eexist": 0})
        emit("snapshot", snap=snap, elapsed_s=snap * 0.1)
        if mode == "crash-mid" and snap == 2:
            print("Segmentation fault in the collector", file=sys.stderr, flush=True)
            sys.exit(139)
        if mode == "quiet-exit" and snap == 2:
            sys.exit(0)  # no end record, no word why
        if mode == "error-end" and snap == 2:
            emit("log", level="error", message="the BPF program failed to load")
            emit("end", reason="error", elapsed_s=0.2, totals={}, lost={},
                 warnings=["the BPF program failed to load"],
                 error="the BPF program failed to load")
            sys.exit(1)
        time.sleep(0.05)
    emit("wakeup", snap=snap + 1, tid=4242, pid=4242, comm="envoy", state="blocked",
         waker_tid=77, waker_pid=77, waker_comm="pilot-agent", target_stack=1,
         waker_stack=2, count=1, total_us=100, max_us=100, blocked_us=100, runq_us=0)
    emit("end", reason="signal", elapsed_s=snap * 0.1, totals={"wakeups": snap * 3 + 1},
         lost={}, warnings=[])
''')


def fake_command(tmp_path: Path, mode: str) -> CollectorCommand:
    script = tmp_path / "fake_collector.py"
    script.write_text(FAKE)
    return CollectorCommand([sys.executable, str(script), mode], dict(os.environ))


def lines_of(path: Path) -> List[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def interrupted_run(tmp_path: Path, saved: Path, display: LiveProgress | None = None,
                    after_hello: List[dict] | None = None, after_snapshots: int = 3,
                    on_snapshot=None) -> CollectorRun:
    """A run of the stand-in that is interrupted once a few snapshots have committed, the
    way Ctrl-C interrupts it (the signal handler's call, from the main thread)."""
    runs: List[CollectorRun] = []

    def on_record(record: dict) -> None:
        if record["type"] != "snapshot":
            return
        if on_snapshot is not None:
            on_snapshot(runs[0])
        if runs[0].sink.snapshots >= after_snapshots and not runs[0].interruptions.count:
            runs[0].interruptions.interrupt()

    sink = StreamSink("local", str(saved), display, after_hello, on_record)
    runs.append(CollectorRun(fake_command(tmp_path, "normal"), sink, 30.0))
    return runs[0]


def test_stream_is_saved_annotated_and_built(tmp_path: Path) -> None:
    saved = tmp_path / "rec.jsonl.gz"
    live = LiveProgress(stream=open(os.devnull, "w"), live=False)  # noqa: SIM115
    run = interrupted_run(tmp_path, saved, live,
                          [{"type": "identity", "pid": 77, "label": "agent"}])
    result = run.run()
    live.close()
    assert result.interrupted and result.end is not None and result.end["reason"] == "signal"
    records = lines_of(saved)
    assert [r["type"] for r in records[:2]] == ["hello", "identity"]
    assert records[-1]["type"] == "end"
    assert not any("WARNING" in json.dumps(r) for r in records)
    assert any("WARNING: Linux version" in line for line in result.stderr_tail)
    recording = result.recording
    assert recording.processes[77].label == "agent"
    (edge,) = recording.edges
    assert edge.waker is not None and edge.waker.comm == "pilot-agent"
    # Every committed snapshot plus the final delta.
    assert edge.count == 3 * run.sink.snapshots + 1
    assert live.sources["local"].status == "done"


def test_recording_is_readable_while_being_written(tmp_path: Path) -> None:
    """Flushed at every commit: a reader (or a crash) sees every snapshot so far."""
    import zlib

    saved = tmp_path / "rec.jsonl.gz"
    seen: List[int] = []

    def peek(run: CollectorRun) -> None:
        if run.sink.snapshots == 2 and not seen:
            raw_file = saved.read_bytes()
            text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw_file).decode()
            seen.append(text.count('"type": "snapshot"'))

    interrupted_run(tmp_path, saved, after_snapshots=2, on_snapshot=peek).run()
    assert seen and seen[0] >= 1


def test_a_plain_name_saves_plain_lines(tmp_path: Path) -> None:
    saved = tmp_path / "rec.jsonl"
    interrupted_run(tmp_path, saved).run()
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end"


def test_a_second_interruption_forces_the_stop(tmp_path: Path) -> None:
    """Ctrl-C twice: the collector is killed, what committed before is kept."""
    script = tmp_path / "stubborn.py"
    script.write_text(FAKE.replace("signal.signal(signal.SIGTERM, lambda *_: stop.append(1))",
                                   "signal.signal(signal.SIGTERM, lambda *_: None)"))
    runs: List[CollectorRun] = []

    def on_record(record: dict) -> None:
        if record["type"] == "snapshot" and runs[0].sink.snapshots == 2:
            runs[0].interruptions.interrupt()
            runs[0].interruptions.interrupt()

    sink = StreamSink("local", str(tmp_path / "rec.jsonl.gz"), None, None, on_record)
    runs.append(CollectorRun(CollectorCommand([sys.executable, str(script), "normal"],
                                              dict(os.environ)), sink, 30.0))
    result = runs[0].run()
    assert result.returncode == -9 and result.end is None and result.interrupted
    assert result.recording.edges and not result.recording.failures
    assert "the collector stopped without its final record" in " ".join(
        result.recording.warnings)


def test_collector_crash_before_hello_is_one_sentence_with_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    saved = tmp_path / "rec.jsonl.gz"
    run = CollectorRun(fake_command(tmp_path, "crash-early"), StreamSink("x", str(saved)), 5.0)
    with pytest.raises(RunFailed, match="before it started tracing: Traceback: boom"):
        run.run()
    assert "boom in the collector" in capsys.readouterr().err
    assert not saved.exists()  # nothing traced, nothing left behind


def _table(recording) -> str:
    import io

    out = io.StringIO()
    render(analyze(recording), "table", out, RenderOptions())
    return out.getvalue()


def test_collector_error_end_is_a_failed_run_that_keeps_what_arrived(tmp_path: Path) -> None:
    saved = tmp_path / "rec.jsonl.gz"
    run = CollectorRun(fake_command(tmp_path, "error-end"), StreamSink("x", str(saved)), 5.0)
    result = run.run()
    sentence = "the collector on node collector failed: the BPF program failed to load"
    assert result.recording.failures == {"collector": sentence}
    assert result.recording.edges  # the two snapshots before the failure
    assert lines_of(saved)[-1]["reason"] == "error"
    assert load_input(str(saved)).failures == {"collector": sentence}  # so says the file
    with pytest.raises(RunFailed, match="the BPF program failed to load; the report shows"):
        raise_if_incomplete(result.recording)
    table = _table(result.recording)
    assert f"Incomplete: {sentence}" in table and "Nothing stands out" not in table


def test_collector_crash_mid_run_is_a_failed_run_said_in_the_recording(tmp_path: Path) -> None:
    saved = tmp_path / "rec.jsonl.gz"
    run = CollectorRun(fake_command(tmp_path, "crash-mid"), StreamSink("x", str(saved)), 5.0)
    result = run.run()
    sentence = "the collector stopped unexpectedly: Segmentation fault in the collector"
    assert result.returncode == 139 and result.end is None
    assert result.recording.failures == {"x": sentence}
    assert lines_of(saved)[-1] == {"type": "failure", "source": "x", "reason": sentence}
    assert load_input(str(saved)).failures == {"x": sentence}
    with pytest.raises(RunFailed, match="stopped unexpectedly"):
        raise_if_incomplete(result.recording)


def test_a_stream_that_stops_short_is_a_failed_run_whatever_the_exit_code(
        tmp_path: Path) -> None:
    """Exit code 0 without the ``end`` record: the report must not read as complete."""
    run = CollectorRun(fake_command(tmp_path, "quiet-exit"), StreamSink("x", None), 5.0)
    result = run.run()
    assert result.returncode == 0 and result.end is None
    (failure,) = result.recording.failures.values()
    assert failure.startswith("the collector stopped unexpectedly: ")
    with pytest.raises(RunFailed, match="stopped unexpectedly"):
        raise_if_incomplete(result.recording)


def test_a_collector_without_bcc_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    """The story of issue 7: the real collector under an interpreter without BCC used to
    end in "stopped: error", "0 wakeups", "Nothing stands out" and exit 0."""
    venv = tmp_path / "venv"  # a clean interpreter: no system site-packages, so no BCC
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import bcc"], capture_output=True).returncode != 0
    saved = tmp_path / "rec.jsonl.gz"
    command = collector_command(python, ["--pid", str(os.getpid())], 5.0, 1.0)
    run = CollectorRun(command, StreamSink("local", str(saved)), 5.0)
    with pytest.raises(RunFailed, match=r"^the collector on node \S+ failed: .* cannot "
                                        r"import bcc; install python3-bpfcc") as info:
        run.run()
    assert "Nothing stands out" not in str(info.value)
    assert not saved.exists()  # nothing traced, nothing left behind


def test_no_interpreter_with_bcc_says_how_to_install(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake_python = tmp_path / "python-without-bcc"
    fake_python.write_text("#!/bin/sh\nexit 1\n")
    fake_python.chmod(0o755)
    monkeypatch.setenv("OFFWAKE_COLLECTOR_PYTHON", str(fake_python))
    with pytest.raises(RunFailed, match="python3-bpfcc"):
        find_collector_python()


def test_collector_command_runs_the_zipapp_of_this_package() -> None:
    import zipfile

    command = collector_command("/usr/bin/python3", ["--pid", "1"], 2.5, 1.0,
                                ["--agg-size", "9"])
    try:
        pyz = command.argv[2]
        assert command.argv[:2] == ["/usr/bin/python3", "-s"] and pyz.endswith(".pyz")
        assert command.argv[3:] == ["--pid", "1", "--duration", "2.5", "--interval", "1",
                                    "--agg-size", "9"]
        names = zipfile.ZipFile(pyz).namelist()
        assert "__main__.py" in names and "kubectl_offwake/collector/main.py" in names
        assert "PYTHONPATH" not in command.env
    finally:
        command.cleanup()
    assert not os.path.exists(os.path.dirname(pyz))

