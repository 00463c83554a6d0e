"""Runs the test programs of this folder and the real collector, as the integration tests need.

The collector runs as it does in production: a subprocess under the system python3 (the one
with bcc), its stdout the wire stream. Nothing of ours is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kubectl_offwake.analysis.analyze import analyze
from kubectl_offwake.importers import load_text

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SYSTEM_PYTHON = "/usr/bin/python3"
CFLAGS = ["-O1", "-fno-omit-frame-pointer", "-pthread"]


def skip_reason() -> Optional[str]:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (eBPF)"
    if not shutil.which("gcc"):
        return "needs gcc"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import bcc"], capture_output=True)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} has no bcc (install python3-bpfcc)"
    return None


#: Built as distribution binaries often are: no frame pointers.
CFLAGS_NO_FP = ["-O1", "-fomit-frame-pointer", "-pthread"]


def skip_module_unless_runnable() -> None:
    """Skips the calling test module (at import) where these tests cannot run."""
    reason = skip_reason()
    if reason:
        import pytest

        pytest.skip(reason, allow_module_level=True)


def compile_prog(name: str, outdir: str, cflags: Sequence[str] = tuple(CFLAGS),
                 exe_name: Optional[str] = None) -> str:
    exe = os.path.join(outdir, exe_name or name)
    subprocess.run(["gcc", *cflags, "-o", exe, os.path.join(HERE, f"{name}.c")], check=True)
    return exe


class Prog:
    """A test program: started, its tids read, told to go, waited for, told to exit."""

    def __init__(self, exe: str, iters: int, period_ms: int, args: Sequence[str] = ()) -> None:
        self.name = os.path.basename(exe)
        self.proc = subprocess.Popen([exe, str(iters), str(period_ms), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.info: Dict[str, int] = json.loads(self.proc.stdout.readline())
        self.pid = self.info["pid"]
        self.target_tid = self.info["target_tid"]
        self.waker_tid = self.info["waker_tid"]
        self.started: Optional[float] = None
        self.done_at: Optional[float] = None

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.started = time.monotonic()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float = 30.0) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        box: List[str] = []
        reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or "done" not in box[0]:
            raise AssertionError(f"{self.name} did not finish its pattern in {timeout}s")
        self.done_at = time.monotonic()

    def close(self) -> None:
        """Let it exit (closes its stdin); kill it if it does not."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Collector:
    """The real collector as a subprocess; stdout is gathered by a thread."""

    def __init__(self, args: List[str], cwd: Optional[str] = None,
                 zipapp: Optional[str] = None) -> None:
        """Runs ``python3 -m kubectl_offwake.collector`` from the checkout, or the zipapp."""
        if zipapp:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            cmd = [SYSTEM_PYTHON, zipapp, *args]
        else:
            env = dict(os.environ, PYTHONPATH=REPO)
            cmd = [SYSTEM_PYTHON, "-m", "kubectl_offwake.collector", *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.lines: List[str] = []
        self.stderr = ""
        self._attached = threading.Event()
        self._snapshot = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if 'attached in ' in line or '"type":"end"' in line:
                self._attached.set()
            if '"type":"snapshot"' in line or '"type":"end"' in line:
                self._snapshot.set()
        self._attached.set()
        self._snapshot.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_attached(self, timeout: float = 60.0) -> None:
        if not self._attached.wait(timeout):
            raise AssertionError("the collector did not attach in time")
        if not any('attached in ' in ln for ln in self.lines):
            self.proc.wait(timeout=10)
            raise AssertionError("the collector stopped before attaching:\n"
                                 + "".join(self.lines) + self.stderr[-3000:])

    def wait_snapshot(self, timeout: float = 60.0) -> None:
        """Until the first snapshot: the collector's loop is running (after attaching it
        first indexes the system libraries, which takes a while on a busy machine)."""
        if not self._snapshot.wait(timeout):
            raise AssertionError("the collector took no snapshot in time")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the final flush; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the collector did not stop in time") from None
        self._reader.join(10)
        self._err.join(10)
        return code

    def records(self) -> List[dict]:
        return [json.loads(ln) for ln in self.lines if ln.strip()]

    def text(self) -> str:
        return "".join(self.lines)


def user_frames_of(stack: object) -> List[str]:
    return list(getattr(stack, "user_frames", ()) or ())


def kernel_frames_of(stack: object) -> List[str]:
    return list(getattr(stack, "kernel_frames", ()) or ())


#: A process's mappings: (start, end, path) per line of /proc/PID/maps.
Mappings = List[Tuple[int, int, str]]


def mappings(pid: int) -> Mappings:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[5].strip() if len(parts) > 5 else ""))
    return out


@dataclass
class Traced:
    """One collector run over some test programs: its stream, and the report made of it."""

    progs: Dict[str, Prog]
    exit_code: int
    stderr: str
    records: List[dict]
    recording: Any  # the stream as the importer reads it
    report: Any  # and as analysis makes it
    #: Each program's mappings, read when it had finished its pattern (it was alive).
    maps: Dict[int, Mappings] = field(default_factory=dict)


def trace(progs: Dict[str, Prog], extra: Sequence[str] = (),
          after_go: Callable[[Collector], None] = lambda collector: None) -> Traced:
    """The programs under one collector (``--interval 1``): attached before they go, stopped
    (SIGTERM) once each has finished its pattern. ``after_go(collector)`` runs once they are
    going (to start a load of its own); the caller closes the programs."""
    args = ["--interval", "1", "--duration", "60", *extra]
    for p in progs.values():
        args += ["--pid", str(p.pid)]
    collector = Collector(args)
    maps: Dict[int, Mappings] = {}
    try:
        collector.wait_attached()
        for p in progs.values():
            p.go()
        after_go(collector)
        for p in progs.values():
            p.wait_done()
            maps[p.pid] = mappings(p.pid)
        code = collector.stop()
    finally:
        if collector.proc.poll() is None:
            collector.proc.kill()
    recording = load_text(collector.text(), "collector")
    return Traced(progs, code, collector.stderr, collector.records(), recording,
                  analyze(recording), maps)
