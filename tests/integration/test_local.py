"""``kubectl offwake local`` through the real CLI, the real collector and the real kernel.

A small C program with a known wake pattern (a 20 ms nanosleep loop) is traced by PID and
by name; a second run is interrupted with SIGINT, as Ctrl-C would, and must still report
and save its recording.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from tests.plugin_cli import plugin_cmd, plugin_env

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="tracing needs root"),
]

SLEEPER_C = r"""
#include <time.h>
#include <unistd.h>

/* Sleeps 20 ms at a time: every wakeup is a timer (hrtimer) firing. */
static void __attribute__((noinline)) nap(void) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(void) {
    for (;;) nap();
    return 0;
}
"""


@pytest.fixture(scope="module")
def sleeper_binary(build_c: Callable[[str, str], Path]) -> Path:
    return build_c(SLEEPER_C, "h8-sleeper")  # the process's comm is this name


@pytest.fixture()
def sleeper(sleeper_binary: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([str(sleeper_binary)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def read_recording(path: Path) -> List[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sleeper_timer_wakeups(report: dict, pid: int) -> int:
    return sum(
        w["count"] for w in report["wakeups"]
        if w["target"]["pid"] == pid and w["category"] == "timer"
    )


def test_local_by_pid_reports_timer_wakeups_and_saves_recording(
        sleeper: subprocess.Popen, tmp_path: Path) -> None:
    saved = tmp_path / "rec.jsonl.gz"
    proc = subprocess.run(
        plugin_cmd("local", "--pid", str(sleeper.pid), "--duration", "2s", "--format", "json",
            "--save", str(saved), "--oncpu-size", "5000"),
        capture_output=True, text=True, env=plugin_env(), timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    targets = {w["target"]["pid"] for w in report["wakeups"]}
    assert targets == {sleeper.pid}
    # every 20 ms nap ends in one timer wakeup: no more of them than the traced time holds
    # (naps end late on a busy machine, never early), and a 2 s trace holds plenty
    timers = sleeper_timer_wakeups(report, sleeper.pid)
    traced_s = report["source"]["elapsed_s"]
    assert 10 <= timers <= traced_s / 0.020 + 2, (timers, traced_s)
    timer_rows = [w for w in report["wakeups"] if w["category"] == "timer"]
    assert any("nap" in " ".join(w["target_stack"]) or "nanosleep" in " ".join(w["target_stack"])
               for w in timer_rows)
    assert report["source"]["end_reason"] == "duration"
    # The recording is the wire stream: hello first, end last, and re-analysable.
    records = read_recording(saved)
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end"
    assert records[0]["map_sizes"]["--oncpu-size"] == 5000  # passed through to the collector
    assert records[1] == {"type": "client", "command": "kubectl offwake local",
                          "options": ["--stack-storage-size", "--agg-size", "--start-size",
                                      "--oncpu-size"]}
    assert report["source"]["command"] == "kubectl offwake local"
    assert "recording saved to" in proc.stderr and str(saved) in proc.stderr
    again = subprocess.run(plugin_cmd("report", str(saved), "--format", "json"),
                           capture_output=True, text=True, env=plugin_env(), timeout=60)
    assert again.returncode == 0, again.stderr
    assert sleeper_timer_wakeups(json.loads(again.stdout), sleeper.pid) == timers


def test_local_by_comm_default_save_path_and_table(sleeper: subprocess.Popen,
                                                   tmp_path: Path) -> None:
    proc = subprocess.run(
        plugin_cmd("local", "--comm", "h8-sleeper", "--duration", "1s"),
        capture_output=True, text=True, env=plugin_env(), timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "h8-sleeper" in proc.stdout and "timer" in proc.stdout
    saved = list(tmp_path.glob("offwake-h8-sleeper-*.jsonl.gz"))
    assert len(saved) == 1, os.listdir(tmp_path)
    assert str(saved[0].name) in proc.stderr
    # Not a terminal: no live redraws, just the one summary line for the source.
    summary = [line for line in proc.stderr.splitlines() if line.startswith("h8-sleeper:")]
    assert len(summary) == 1 and "wakeups" in summary[0], proc.stderr


def test_ctrl_c_mid_run_still_reports_and_saves(sleeper: subprocess.Popen,
                                                tmp_path: Path) -> None:
    saved = tmp_path / "interrupted.jsonl.gz"
    out = tmp_path / "report.json"
    proc = subprocess.Popen(
        plugin_cmd("local", "--pid", str(sleeper.pid), "--duration", "60s", "--out", str(out),
            "--save", str(saved)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plugin_env(), cwd=tmp_path,
    )
    try:
        # Wait until the collector has committed at least one snapshot to the file.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if saved.exists() and _has_snapshot(saved):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the recording never got a snapshot")
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C delivers to the CLI
        _, stderr = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    report = json.loads(out.read_text())
    assert report["source"]["end_reason"] == "signal"  # not "duration": Ctrl-C ended it
    assert sleeper_timer_wakeups(report, sleeper.pid) > 10
    records = read_recording(saved)
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "signal"
    assert "stopped: signal" in stderr


def _has_snapshot(path: Path) -> bool:
    try:
        with gzip.open(path, "rt") as handle:
            return any('"type":"snapshot"' in line for line in handle)
    except (EOFError, OSError):
        # A gzip stream still being written ends without its trailer; the lines before
        # the last sync flush are readable all the same.
        try:
            data = _read_partial_gzip(path)
        except OSError:
            return False
        return b'"type":"snapshot"' in data


def _read_partial_gzip(path: Path) -> bytes:
    import zlib

    raw = path.read_bytes()
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return decomp.decompress(raw)


def test_bad_usage_is_one_sentence_exit_2() -> None:
    proc = subprocess.run(plugin_cmd("local", "--duration", "1s"), capture_output=True, text=True,
                          env=plugin_env(), timeout=60)
    assert proc.returncode == 2
    assert "--pid" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(plugin_cmd("local", "--pid", "1", "--duration", "soon"),
                          capture_output=True, text=True, env=plugin_env(), timeout=60)
    assert proc.returncode == 2 and "duration" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_process_fails_with_one_sentence(tmp_path: Path) -> None:
    pid = _unused_pid()
    proc = subprocess.run(plugin_cmd("local", "--pid", str(pid), "--duration", "1s"),
                          capture_output=True, text=True, env=plugin_env(), timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert str(pid) in errors[0] or "no target" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as handle:
        pid_max = int(handle.read())
    for pid in range(pid_max - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


def as_non_root(*args: str) -> List[str]:
    """A command line running as a non-root user: a new user namespace without a mapping
    makes the process's uid the overflow uid (not 0) while files stay readable."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    return [unshare, "--user", *args]


def test_not_root_says_so() -> None:
    """The CLI as a non-root user refuses in one sentence before starting anything."""
    proc = subprocess.run(as_non_root(*plugin_cmd("local", "--pid", "1", "--duration", "1s")),
                          capture_output=True, text=True, env=plugin_env(), timeout=60, cwd="/")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1
    assert "root" in proc.stderr and "sudo" in proc.stderr
