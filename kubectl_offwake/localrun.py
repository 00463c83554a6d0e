"""Runs the collector on this machine as a subprocess and turns its stream into a Recording.

The collector needs BCC, which lives in the system Python (Debian's ``python3-bpfcc``), not
necessarily in the interpreter running this CLI. So the collector runs under an interpreter
that can ``import bcc``, from the zipapp built out of this package (the same artifact the
Kubernetes path ships to nodes), so nothing else of this environment leaks in.

Its stdout is the wire stream. Every line is written to the recording file as it arrives
(gzip, flushed at each record boundary the decoder reports, so a crash loses nothing that
was committed) and decoded into a :class:`RecordingBuilder` and the live progress display.
Ctrl-C (or SIGTERM) sends SIGTERM to the collector, which takes a final snapshot; a second
Ctrl-C stops waiting. Either way the run still yields what arrived.

A collector that fails (ends in error, crashes, writes something that is no wire stream)
fails the run: when it had traced something, the run still yields that, with the failure in
``Recording.failures`` (and as a ``failure`` record in the saved file), and the command
exits 1 after the report (:func:`raise_if_incomplete`); when it had traced nothing, the run
raises at once.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
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
from dataclasses import dataclass, field
from typing import IO, Any, Deque, Dict, List, Optional

from .analysis.model import Recording
from .demo.proctitle import die_with_parent
from .errors import RunFailed
from .importers.builder import RecordingBuilder
from .live import LiveProgress
from .wire import StreamDecoder, WireError

#: How long to wait for the collector's final snapshot after SIGTERM.
FLUSH_TIMEOUT_S = 15.0
#: Time allowed beyond ``--duration`` for compiling, attaching and the final flush.
START_GRACE_S = 60.0
STDERR_LINES = 200


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


def require_root() -> None:
    if os.geteuid() != 0:
        raise RunFailed("tracing with eBPF needs root; run this command with sudo")


def _clean_env() -> Dict[str, str]:
    """This process's environment minus what would point another Python at our packages."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
        env.pop(key, None)
    return env


# -- the collector's command line ------------------------------------------------------------


def package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


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
    """``python collector.pyz TARGET --duration S --interval S``.

    The collector runs from the same zipapp the Kubernetes path ships to nodes, built from
    this package, so local runs exercise exactly that artifact and the system Python sees
    nothing of this environment. If the zipapp cannot be built (a partial install), the
    package itself is exposed instead: ``PYTHONPATH`` is a fresh directory with one symlink
    to it (an installed package's site-packages would shadow the system's modules).
    """
    tempdir = tempfile.mkdtemp(prefix="offwake-collector-")
    env = _clean_env()
    env["PYTHONUNBUFFERED"] = "1"
    options = ["--duration", f"{duration_s:g}", "--interval", f"{interval_s:g}"]
    try:
        from .collector.bundle import write_zipapp

        pyz = write_zipapp(os.path.join(tempdir, "offwake-collector.pyz"))
        argv = [python, "-s", pyz, *target, *options, *(extra or [])]
    except (ImportError, OSError):
        os.symlink(package_dir(), os.path.join(tempdir, "kubectl_offwake"))
        env["PYTHONPATH"] = tempdir
        argv = [python, "-s", "-m", "kubectl_offwake.collector", *target, *options,
                *(extra or [])]
    return CollectorCommand(argv, env, tempdir)


# -- running it ----------------------------------------------------------------------------------


@dataclass
class LocalRunResult:
    recording: Recording
    saved_path: Optional[str]
    interrupted: bool
    returncode: Optional[int]
    end: Optional[dict] = None
    stderr_tail: List[str] = field(default_factory=list)


def raise_if_incomplete(recording: Recording) -> None:
    """After the report: a recording whose collector failed makes the command fail (exit 1)."""
    if recording.failures:
        raise RunFailed("; ".join(recording.failures.values())
                        + "; the report shows what was collected, marked incomplete")


class RecordingFile:
    """The wire stream saved as it arrives, gzip, flushed so a crash keeps what came."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._handle: Optional[gzip.GzipFile] = gzip.GzipFile(path, "wb")  # noqa: SIM115
        except OSError as exc:
            raise RunFailed(
                f"cannot write the recording to {path}: {exc.strerror}; choose another --save"
            ) from None

    def write(self, raw: bytes) -> None:
        if self._handle is not None:
            self._handle.write(raw if raw.endswith(b"\n") else raw + b"\n")

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()  # Z_SYNC_FLUSH: everything so far is decodable

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _Signals:
    """While running: Ctrl-C / SIGTERM ask the collector to stop; a second one stops waiting."""

    def __init__(self, on_signal: Any) -> None:
        self.on_signal = on_signal
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.on_signal(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class CollectorRun:
    """One collector subprocess, streamed into a recording file, a builder and a display."""

    def __init__(self, command: CollectorCommand, save_path: Optional[str],
                 progress: Optional[LiveProgress] = None, source: str = "local",
                 duration_s: Optional[float] = None,
                 annotations: Optional[List[dict]] = None) -> None:
        self.command = command
        #: Records the client adds (e.g. ``identity``), saved and applied after ``hello``.
        self.annotations = list(annotations or [])
        self.save_path = save_path
        self.progress = progress
        self.source = source
        self.duration_s = duration_s
        self.builder = RecordingBuilder()
        self.decoder = StreamDecoder()
        self.stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.proc: Optional[subprocess.Popen] = None
        self.interrupts = 0
        self.stop_sent_at: Optional[float] = None
        self.end: Optional[dict] = None
        self.wire_error: Optional[str] = None

    # -- signals -----------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """First call: SIGTERM to the collector (final snapshot). Later calls: stop waiting."""
        self.interrupts += 1
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.interrupts == 1:
            self._signal(signal.SIGTERM)
            self.stop_sent_at = time.monotonic()
            if self.progress is not None:
                self.progress.set_status(self.source, "stopping",
                                         "stopping: waiting for the final snapshot "
                                         "(Ctrl-C again to stop waiting)")
        else:
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    # -- the run -------------------------------------------------------------------------

    def run(self) -> LocalRunResult:
        if self.progress is not None:
            self.progress.add_source(self.source, self.duration_s)
        saved = RecordingFile(self.save_path) if self.save_path else None
        lines: queue.Queue = queue.Queue()
        try:
            with _Signals(self.request_stop):
                self.proc = self._spawn()
                readers = [
                    threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True),
                    threading.Thread(target=_collect, args=(self.proc.stderr, self.stderr_tail),
                                     daemon=True),
                ]
                for reader in readers:
                    reader.start()
                self._consume(lines, saved)
                self._reap()
                readers[1].join(2.0)
            failure = self._failure()
            if failure is not None and self.builder.snapshots:
                # said in the recording itself, so a later `report` of it says so too
                node = self.builder.recording.source.get("node") or self.source
                self._add_client_record(
                    {"type": "failure", "source": str(node), "reason": failure}, saved)
        finally:
            if saved is not None:
                saved.close()
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

    def _consume(self, lines: queue.Queue, saved: Optional[RecordingFile]) -> None:
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
            if not raw.lstrip().startswith(b"{"):
                # Not a wire record: libbcc prints some warnings to stdout. Keep them with
                # the diagnostics, out of the recording.
                if raw.strip():
                    self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip("\n"))
                continue
            if saved is not None:
                saved.write(raw)
            committed = self._decode(raw)
            if self.annotations and self.decoder.saw_hello:
                self._annotate(saved)
            if committed and saved is not None:
                saved.flush()

    def _annotate(self, saved: Optional[RecordingFile]) -> None:
        """Insert the client's own records right after ``hello`` (no ``seq``: not the
        collector's numbering)."""
        for record in self.annotations:
            self._add_client_record(record, saved)
        self.annotations = []

    def _add_client_record(self, record: dict, saved: Optional[RecordingFile]) -> None:
        if saved is not None:
            saved.write(json.dumps(record, separators=(",", ":")).encode())
            saved.flush()
        self.builder.add(record)

    def _check_deadlines(self, deadline: Optional[float]) -> None:
        now = time.monotonic()
        if self.stop_sent_at is not None and now - self.stop_sent_at > FLUSH_TIMEOUT_S:
            self._signal(signal.SIGKILL)  # no final snapshot in time; keep what came
        elif self.stop_sent_at is None and deadline is not None and now > deadline:
            self.request_stop(signal.SIGTERM)

    def _decode(self, raw: bytes) -> bool:
        """Feed one line; ``True`` when it committed records (time to flush the file)."""
        if self.wire_error is not None:
            return False
        try:
            records = self.decoder.feed(raw.decode("utf-8", "replace"))
        except WireError as exc:
            self.wire_error = str(exc)
            self.request_stop(signal.SIGTERM)
            return False
        for record in records:
            self.builder.add(record)
            if self.progress is not None:
                self.progress.feed(self.source, record)
            if record.get("type") == "end":
                self.end = record
        return bool(records)

    def _reap(self) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(FLUSH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _result(self, failure: Optional[str]) -> LocalRunResult:
        recording = self.builder.finish()
        for warning in self.decoder.warnings():
            if warning not in recording.warnings:
                recording.warnings.append(warning)
        returncode = self.proc.returncode if self.proc is not None else None
        if recording.failures or failure is not None:
            self._show_stderr()
            if not self.builder.snapshots:  # nothing was traced: nothing to report
                self._fail(failure or "; ".join(recording.failures.values()))
        elif self.end is None:
            recording.warnings.append(
                "the collector stopped without its final record; the report covers the "
                "snapshots that arrived"
            )
        return LocalRunResult(recording, self.save_path, self.interrupts > 0, returncode,
                              self.end, list(self.stderr_tail))

    def _failure(self) -> Optional[str]:
        """Why the collector failed, when its stream does not say so itself (an ``end`` in
        error does: the builder records that one); None when it did not fail."""
        if self.wire_error is not None:
            return f"the collector's output is not a wire stream ({self.wire_error})"
        if not self.decoder.saw_hello:
            if self.interrupts:
                return "interrupted before the collector started; nothing was traced"
            reason = _last_error(self.stderr_tail) or f"exit code {self._returncode()}"
            return f"the collector failed before it started tracing: {reason}"
        if self._returncode() not in (0, None, -signal.SIGTERM) and self.end is None \
                and not self.interrupts:
            reason = _last_error(self.stderr_tail) or f"exit code {self._returncode()}"
            return f"the collector stopped unexpectedly: {reason}"
        return None

    def _returncode(self) -> Optional[int]:
        return self.proc.returncode if self.proc is not None else None

    def _show_stderr(self) -> None:
        tail = [line for line in self.stderr_tail if line.strip()][-10:]
        if tail:
            sys.stderr.write("collector stderr (last lines):\n")
            for line in tail:
                sys.stderr.write(f"  {line}\n")

    def _fail(self, sentence: str) -> None:
        """Nothing was traced: no empty recording left behind, the run fails at once."""
        if self.save_path and os.path.exists(self.save_path):
            try:
                os.unlink(self.save_path)
            except OSError:
                pass
        raise RunFailed(sentence)


def _pump(stream: IO[bytes], lines: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw)
    finally:
        lines.put(None)


def _collect(stream: IO[bytes], tail: Deque[str]) -> None:
    for raw in iter(stream.readline, b""):
        tail.append(raw.decode("utf-8", "replace").rstrip("\n"))


def _last_error(lines: Any) -> Optional[str]:
    for line in reversed(list(lines)):
        text = line.strip()
        if text:
            return text[:300]
    return None


# -- the whole local run -------------------------------------------------------------------------


def default_save_path(label: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "trace"
    return f"offwake-{safe}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl.gz"


def run_local(target: List[str], duration_s: float, save_path: Optional[str],
              interval_s: float = 1.0, title: str = "tracing", source: str = "local",
              extra: Optional[List[str]] = None,
              progress: Optional[LiveProgress] = None) -> LocalRunResult:
    """Check root, find an interpreter with bcc, run the collector with a live display."""
    require_root()
    python = find_collector_python()
    command = collector_command(python, target, duration_s, interval_s, extra)
    own_progress = progress is None
    display = progress if progress is not None else LiveProgress(title)
    failed = False
    try:
        if own_progress:
            display.__enter__()
        return CollectorRun(command, save_path, display, source, duration_s).run()
    except RunFailed:
        failed = True
        raise
    finally:
        command.cleanup()
        if own_progress:
            display.close(summary=not failed)  # the error says it all
