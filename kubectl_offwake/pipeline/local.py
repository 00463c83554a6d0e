"""The collector as a subprocess of this machine (``local``, ``demo``), fed into a sink.

The collector needs BCC, which lives in the system Python (Debian's ``python3-bpfcc``), not
necessarily in the interpreter running this CLI. So the collector runs under an interpreter
that can ``import bcc``, from the zipapp built out of this package (the same artifact the
Kubernetes path ships to nodes), so nothing else of this environment leaks in.

Its stdout is the wire stream, fed line by line to a :class:`~.sink.StreamSink` (decode,
build, display, save); its stderr is kept apart for error messages. Interruptions follow
:mod:`.interrupt`: the first sends SIGTERM (the collector takes a final snapshot and ends
its stream), the second SIGKILL. A collector still running long past ``--duration`` gets
the same graceful stop, and a forced one if its flush never comes.

A collector that fails (ends in error, crashes, writes something that is no wire stream)
fails the run: when it had traced something, the run still yields that, with the failure in
``Recording.failures`` (and as a ``failure`` record in the saved file), and the command
exits 1 after the report (:func:`raise_if_incomplete`); when it had traced nothing, the run
raises at once and leaves no recording behind.
"""

from __future__ import annotations

import glob
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence

from ..analysis.model import Recording
from ..collector.bundle import write_zipapp
from ..errors import RunFailed, require_root, say
from ..live import LiveProgress
from ..prctl import die_with_parent
from .interrupt import Interruptions
from .sink import StreamSink

#: How long to wait for the collector's final snapshot after SIGTERM.
FLUSH_TIMEOUT_S = 15.0
#: Time allowed beyond ``--duration`` for compiling, attaching and the final flush.
START_GRACE_S = 60.0


# -- finding an interpreter with bcc -------------------------------------------------------------


def _candidates() -> List[str]:
    found: List[str] = []
    override = os.environ.get("OFFWAKE_COLLECTOR_PYTHON")
    if override:
        return [override]
    found.append("/usr/bin/python3")
    versions = glob.glob("/usr/bin/python3.[0-9]*")
    versions = [p for p in versions if re.fullmatch(r"/usr/bin/python3\.\d+", p)]
    found.extend(sorted(versions, key=lambda p: int(p.rsplit(".", 1)[1]), reverse=True))
    found.extend(["/usr/local/bin/python3", sys.executable])
    unique: List[str] = []
    for path in found:
        if path not in unique and os.access(path, os.X_OK):
            unique.append(path)
    return unique


def has_bcc(python: str, timeout: float = 15.0) -> bool:
    """Whether ``python`` can import bcc (the collector's one dependency)."""
    try:
        proc = subprocess.run([python, "-c", "import bcc"], capture_output=True,
                              timeout=timeout, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_collector_python() -> str:
    """The first interpreter that has bcc: $OFFWAKE_COLLECTOR_PYTHON, then the system ones."""
    override = os.environ.get("OFFWAKE_COLLECTOR_PYTHON")
    for python in _candidates():
        if has_bcc(python):
            return python
    if override:
        raise RunFailed(
            f"OFFWAKE_COLLECTOR_PYTHON={override} cannot import bcc; point it at a Python "
            "with BCC (Debian/Ubuntu: apt-get install python3-bpfcc) or unset it"
        )
    raise RunFailed(
        "no Python on this machine can import bcc, which the collector needs; install it "
        "with apt-get install python3-bpfcc (Fedora: dnf install python3-bcc) or set "
        "OFFWAKE_COLLECTOR_PYTHON to a Python that has it"
    )


def _clean_env() -> Dict[str, str]:
    """This process's environment minus what would point another Python at our packages."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
        env.pop(key, None)
    return env


# -- the collector's command line ------------------------------------------------------------


@dataclass
class CollectorCommand:
    """argv and environment for one collector run, plus what to remove afterwards."""

    argv: List[str]
    env: Dict[str, str]
    tempdir: Optional[str] = None

    def cleanup(self) -> None:
        if self.tempdir:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None


def collector_command(python: str, target: List[str], duration_s: float,
                      interval_s: float, extra: Optional[List[str]] = None) -> CollectorCommand:
    """``python -s collector.pyz TARGET --duration S --interval S [EXTRA]``.

    The collector runs from the same zipapp the Kubernetes path ships to nodes, built from
    this package, so local runs exercise exactly that artifact and the system Python sees
    nothing of this environment.
    """
    tempdir = tempfile.mkdtemp(prefix="offwake-collector-")
    env = _clean_env()
    env["PYTHONUNBUFFERED"] = "1"
    options = ["--duration", f"{duration_s:g}", "--interval", f"{interval_s:g}"]
    try:
        pyz = write_zipapp(os.path.join(tempdir, "offwake-collector.pyz"))
    except OSError as exc:
        shutil.rmtree(tempdir, ignore_errors=True)
        raise RunFailed(f"cannot write the collector to {tempdir}: {exc.strerror}; "
                        "free space in the temporary directory (TMPDIR) and retry") from None
    return CollectorCommand([python, "-s", pyz, *target, *options, *(extra or [])], env,
                            tempdir)


# -- running it ----------------------------------------------------------------------------------


@dataclass
class LocalRunResult:
    recording: Recording
    interrupted: bool
    returncode: Optional[int]
    end: Optional[Mapping[str, Any]]
    stderr_tail: List[str]


def raise_if_incomplete(recording: Recording) -> None:
    """After the report: a recording whose collector failed makes the command fail (exit 1)."""
    if recording.failures:
        raise RunFailed("; ".join(recording.failures.values())
                        + "; the report shows what was collected, marked incomplete")


class CollectorRun:
    """One collector subprocess, its stdout fed to a :class:`StreamSink`."""

    def __init__(self, command: CollectorCommand, sink: StreamSink,
                 duration_s: Optional[float] = None) -> None:
        self.command = command
        self.sink = sink
        self.duration_s = duration_s
        self.proc: Optional[subprocess.Popen] = None
        self.interruptions = Interruptions(self.stop, self._say)
        self.stop_sent_at: Optional[float] = None

    # -- stopping ------------------------------------------------------------------------

    def stop(self, force: bool = False) -> None:
        """Graceful: SIGTERM (the collector's final snapshot). Forced: SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if force:
            self._signal(signal.SIGKILL)
        elif self.stop_sent_at is None:
            self._signal(signal.SIGTERM)
            self.stop_sent_at = time.monotonic()
            if self.sink.display is not None:
                self.sink.display.set_status(self.sink.name, "stopping")

    def _say(self, text: str) -> None:
        if self.sink.display is not None:
            self.sink.display.notice(text)
        else:
            say(text)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    # -- the run -------------------------------------------------------------------------

    def run(self) -> LocalRunResult:
        lines: queue.Queue = queue.Queue()
        try:
            with self.interruptions:
                self.proc = self._spawn()
                assert self.proc.stdout is not None and self.proc.stderr is not None
                readers = [
                    threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True),
                    threading.Thread(target=_collect,
                                     args=(self.proc.stderr, self.sink.text_tail), daemon=True),
                ]
                for reader in readers:
                    reader.start()
                self._consume(lines)
                self._reap()
                readers[1].join(2.0)
            failure = self._failure()
            if failure is not None and self.sink.snapshots:
                node = self.sink.recording.source.get("node") or self.sink.name
                self.sink.add_failure(str(node), failure)
        finally:
            self.sink.close()
            self.command.cleanup()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self._result(failure)

    def _spawn(self) -> subprocess.Popen:
        try:
            return subprocess.Popen(
                self.command.argv, env=self.command.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,  # the terminal's Ctrl-C reaches us; we stop it gracefully
                preexec_fn=die_with_parent,  # if we are killed, it still flushes and detaches
            )
        except OSError as exc:
            raise RunFailed(
                f"cannot start the collector ({self.command.argv[0]}): {exc.strerror}"
            ) from None

    def _consume(self, lines: queue.Queue) -> None:
        deadline = (time.monotonic() + self.duration_s + START_GRACE_S
                    if self.duration_s else None)
        while True:
            try:
                raw = lines.get(timeout=0.2)
            except queue.Empty:
                self._check_deadlines(deadline)
                continue
            if raw is None:
                return
            self.sink.feed_line(raw)
            if self.sink.fatal is not None:
                self.stop()  # not a wire stream: nothing more worth reading

    def _check_deadlines(self, deadline: Optional[float]) -> None:
        now = time.monotonic()
        if self.stop_sent_at is not None and now - self.stop_sent_at > FLUSH_TIMEOUT_S:
            self.stop(force=True)  # no final snapshot in time; keep what came
        elif self.stop_sent_at is None and deadline is not None and now > deadline:
            self.stop()

    def _reap(self) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(FLUSH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _result(self, failure: Optional[str]) -> LocalRunResult:
        recording = self.sink.finish()
        tail = list(self.sink.text_tail)
        if recording.failures or failure is not None:
            _show_tail(tail)
            if not self.sink.snapshots:  # nothing was traced: nothing to report
                self.sink.discard()
                raise RunFailed(failure or "; ".join(recording.failures.values()))
        return LocalRunResult(recording, self.interruptions.interrupted, self._returncode(),
                              self.sink.end, tail)

    def _failure(self) -> Optional[str]:
        """Why the collector failed, when its stream does not say so itself (an ``end`` in
        error does: the builder records that one); None when it did not fail."""
        if self.sink.fatal is not None:
            return f"the collector's output is not a wire stream ({self.sink.fatal})"
        if not self.sink.saw_hello:
            if self.interruptions.interrupted:
                return "interrupted before the collector started; nothing was traced"
            reason = _last_line(self.sink.text_tail) or f"exit code {self._returncode()}"
            return f"the collector failed before it started tracing: {reason}"
        if not self.sink.ended and not self.interruptions.interrupted:
            # whatever its exit code: a stream without its end is short of its last data
            reason = _last_line(self.sink.text_tail) or f"exit code {self._returncode()}"
            return f"the collector stopped unexpectedly: {reason}"
        return None

    def _returncode(self) -> Optional[int]:
        return self.proc.returncode if self.proc is not None else None


def _pump(stream: IO[bytes], lines: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw)
    finally:
        lines.put(None)


def _collect(stream: IO[bytes], tail: Deque[str]) -> None:
    """The collector's stderr (BCC's compiler, a traceback): the text tail, for errors."""
    for raw in iter(stream.readline, b""):
        tail.append(raw.decode("utf-8", "replace").rstrip("\n"))


def _last_line(lines: Iterable[str]) -> Optional[str]:
    for line in reversed(list(lines)):
        text = line.strip()
        if text:
            return text[:300]
    return None


def _show_tail(tail: List[str]) -> None:
    lines = [line for line in tail if line.strip()][-10:]
    if lines:
        say("collector stderr (last lines):")
        for line in lines:
            say(f"  {line}")


# -- the whole local run -------------------------------------------------------------------------


def run_local(target: List[str], duration_s: float, save_path: Optional[str],
              interval_s: float = 1.0, title: str = "tracing", source: str = "local",
              extra: Optional[List[str]] = None,
              after_hello: Optional[Sequence[Mapping[str, Any]]] = None) -> LocalRunResult:
    """Check root, find an interpreter with bcc, run the collector with a live display."""
    require_root("tracing with eBPF")
    python = find_collector_python()
    command = collector_command(python, target, duration_s, interval_s, extra)
    display = LiveProgress(title)
    failed = False
    try:
        sink = StreamSink(source, save_path, display, after_hello)
        display.__enter__()
        return CollectorRun(command, sink, duration_s).run()
    except RunFailed:
        failed = True
        raise
    finally:
        command.cleanup()
        display.close(summary=not failed)  # the error says it all
