"""The collector's run: resolve targets, load BPF, snapshot at an interval, flush at the end.

Only wire records go to stdout; diagnostics are ``log`` records (BCC's own compiler messages
go to stderr). Stops on --duration, SIGTERM/SIGINT (final snapshot, ``end``, exit 0), or when
every target has exited (``end`` with reason ``target-exit``).
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING, Dict, List, Optional, Sequence

from .. import __version__, wire
from ..wire import WireWriter
from ..wire.schema import (
    CgroupPhase,
    EndFrames,
    EndReason,
    EndRecord,
    HelloRecord,
    LogLevel,
    LossCounts,
    TargetRecord,
    loss_sentences,
)
from .cgroups import cpu_stat_path, read_cgroup, read_cpu_stat
from .cli import Options, parse_args
from .envoy_stats import EnvoyStatsReader
from .headers import Headers, find_headers
from .targets import Resolution, Target, resolve

if TYPE_CHECKING:  # bcc is imported only once tracing starts
    from .bpfprog import Program
    from .snapshot import Snapshotter

POLL_S = 0.1


def ensure_tracefs() -> Optional[str]:
    """Mount tracefs if nothing is mounted (BCC reads tracepoint formats from it)."""
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(path, "events")):
            return None
    try:
        subprocess.run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"],
                       capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "tracefs is not mounted and mounting it failed; mount /sys/kernel/tracing"
    return None


class Collector:
    """One run of the collector, writing to ``out``."""

    def __init__(self, opts: Options, out: IO[str]) -> None:
        self.opts = opts
        self.writer = WireWriter(out)
        self.stop_reason: Optional[EndReason] = None
        self.started_mono = time.monotonic()
        self.warnings: List[str] = []
        self.targets: List[Target] = []
        self.attached_mono: Optional[float] = None  # when tracing began (BPF attached)

    def log(self, level: LogLevel, message: str) -> None:
        self.writer.emit({"type": "log", "level": level, "message": message})

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_reason is None:
            self.stop_reason = "signal"

    def _hello(self, headers: Optional[Headers]) -> None:
        fields: HelloRecord = {
            "type": "hello", "schema": wire.SCHEMA_VERSION, "tool_version": __version__,
            "collector": "bcc", "kernel": platform.release(),
            "node": self.opts.node_name or socket.gethostname(),
            "started": round(time.time(), 3), "interval_s": self.opts.interval_s,
            "min_block_us": self.opts.min_block_us,
            "python": platform.python_version(), "map_sizes": self.opts.map_sizes(),
        }
        if self.opts.duration_s:
            fields["duration_s"] = self.opts.duration_s
        if headers is not None:
            fields["headers"] = headers.describe()
        try:
            import bcc

            fields["bcc_version"] = getattr(bcc, "__version__", "unknown")
        except ImportError:
            fields["bcc_version"] = None
        self.writer.emit(fields)

    def _end(self, reason: EndReason, totals: Optional[Dict[str, int]] = None,
             lost: Optional[LossCounts] = None, error: Optional[str] = None,
             frames: Optional[EndFrames] = None) -> None:
        now = time.monotonic()
        record: EndRecord = {
            "type": "end", "reason": reason, "elapsed_s": round(now - self.started_mono, 3),
            "totals": totals or {}, "lost": lost or {}, "warnings": self.warnings,
        }
        if self.attached_mono is not None:
            record["tracing_s"] = round(now - self.attached_mono, 3)
        if error is not None:
            record["error"] = error
        if frames is not None:
            record["frames"] = frames
        self.writer.emit(record)
        self.writer.flush()

    def _fail(self, message: str) -> int:
        self.log("error", message)
        self.warnings.append(message)
        self._end("error", error=message)
        return 1

    def _resolve(self) -> Resolution:
        deadline = time.monotonic() + self.opts.wait_s
        while True:
            res = resolve(self.opts.pids, self.opts.comm, self.opts.container_ids)
            if res.targets or time.monotonic() >= deadline or self.stop_reason:
                return res
            time.sleep(0.2)

    def _cgroup_stats(self, phase: CgroupPhase) -> None:
        done = set()
        for t in self.targets:
            info = read_cgroup(t.pid)
            if info is None:
                continue
            path = cpu_stat_path(t.pid, info)
            if path is None or path in done:
                continue
            done.add(path)
            stat = read_cpu_stat(path)
            if not stat:
                continue
            self.writer.emit({
                "type": "cgroup_stat", "pid": t.pid, "cgroup": info.path, "phase": phase,
                "file": path, "nr_periods": stat.get("nr_periods", 0),
                "nr_throttled": stat.get("nr_throttled", 0),
                "throttled_usec": stat.get("throttled_usec", 0),
            })

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        headers: Optional[Headers] = None
        header_error = None
        try:
            headers = find_headers(explicit=self.opts.headers)
        except LookupError as exc:
            header_error = str(exc)
        self._hello(headers)
        res = self._resolve()
        for note in res.notes:
            self.log("warning" if not res.targets else "info", note)
        if not res.targets:
            return self._fail("no target process found (" + "; ".join(res.notes) + ")")
        self.targets = res.targets
        self.writer.emit(target_record(res.targets))
        if header_error:
            return self._fail(header_error)
        assert headers is not None
        os.environ.update(headers.env)
        problem = ensure_tracefs()
        if problem:
            return self._fail(problem)
        return self._trace()

    def _trace(self) -> int:
        from .bpfprog import Program
        from .snapshot import Snapshotter, lost_summary

        try:
            program = Program(self.opts.min_block_us, self.opts.sizes, self.opts.extra_cflags)
        except ImportError:
            return self._fail(f"{sys.executable} cannot import bcc; install python3-bpfcc "
                              "(Debian/Ubuntu) or bcc-python3 and run the collector with it")
        except Exception as exc:  # noqa: BLE001 - BCC raises plain Exception on compile errors
            if os.geteuid() != 0:
                return self._fail("loading BPF needs root (or CAP_BPF, CAP_PERFMON and "
                                  "CAP_SYS_RESOURCE); run the collector as root")
            return self._fail(f"could not load the BPF program ({exc}); see the collector's "
                              "stderr for the compiler's messages")
        for note in program.notes:
            self.log("warning", note)
        snap = Snapshotter(program, self.writer, self.started_mono, self.opts.min_block_us)
        try:
            snap.warm([t.pid for t in self.targets])
            if snap.sites.stats.modules:
                st = snap.sites.stats
                self.log("info", f"unwind tables for the targets' {st.modules} modules without "
                         f"frame pointers ({st.sites} sites) in {st.seconds * 1000:.0f} ms")
            for t in self.targets:
                snap.process(t.pid, t.comm, with_threads=True)
            envoy = EnvoyStatsReader.read_start(self.targets, self.log)
            program.set_targets([t.pid for t in self.targets])
            self.attached_mono = snap.attached_mono = time.monotonic()
            self.log("info", f"BPF compiled and attached in {program.load_s * 1000:.0f} ms")
            self._cgroup_stats("start")
            self.writer.flush()
            snap.index_system_libraries()
            error: Optional[str] = None
            try:
                reason = self._loop(program, snap)
            except Exception as exc:  # noqa: BLE001 - keep what we have, say what broke
                self.log("error", f"the collector failed mid-trace: {exc!r}")
                error = f"the trace stopped early: {exc!r}"
                self.warnings.append(error)
                reason = "error"
            counters = program.counters()
            snap.take(counters)
            envoy.finish(self.writer.emit)
            n_pending = snap.pending([t.pid for t in self.targets if t.alive()],
                                     self.attached_mono)
            for t in self.targets:
                if t.alive():
                    rec = snap.ids.refresh(t.pid, t.comm)
                    self.writer.emit(rec)
            self._cgroup_stats("end")
            if snap.ids.cgroups.truncated:
                self.log("warning", "the cgroup v2 hierarchy has more directories than the "
                         "collector indexes; a waker that exited before its /proc was read "
                         "may be named by its comm only")
            self.warnings.extend(loss_sentences(lost_summary(counters)))
            totals = {
                "switches": counters.get("switch_out", 0),
                "wakeups": counters.get("wakeup", 0),
                "intervals": counters.get("switch_in", 0),
                "noop_wakes": counters.get("noop_wake", 0),
                "short": counters.get("short", 0),
                "kstack_walks": counters.get("kstack_walks", 0),
                "kstack_cache_hits": counters.get("kcache_hit", 0),
                "kstack_cache_mismatches": counters.get("kcache_mismatch", 0),
                "ustack_truncated": counters.get("ustack_truncated", 0),
                "unwind_modules": snap.sites.stats.modules,
                "unwind_sites": snap.sites.stats.sites,
                "unwind_index_ms": int(snap.sites.stats.seconds * 1000),
                "cgroup_walks": snap.ids.cgroups.walks,
                "cgroup_walk_ms": int(snap.ids.cgroups.seconds * 1000),
                "stack_overflow": counters.get("stack_overflow", 0),
                "waker_ustack_lost": counters.get("wstack_eexist", 0)
                + counters.get("wstack_enomem", 0),
                "edges": snap.edges_sent, "stacks": snap.stacks_sent,
                "snapshots": snap.snap, "pending": n_pending,
                "load_ms": int(program.load_s * 1000),
                "symbolize_ms": int(snap.symbolize_s * 1000),
            }
            self._end(reason, totals, lost_summary(counters), error, snap.frames.record())
            return 1 if reason == "error" else 0
        finally:
            program.close()

    def _loop(self, program: Program, snap: Snapshotter) -> EndReason:
        start = time.monotonic()
        next_snap = start + self.opts.interval_s
        end_at = start + self.opts.duration_s if self.opts.duration_s else None
        while True:
            if self.stop_reason:
                return self.stop_reason
            now = time.monotonic()
            if end_at is not None and now >= end_at:
                return "duration"
            alive = []
            for t in self.targets:
                if t.alive():
                    alive.append(t)
                else:
                    self.log("info", f"target {t.comm} (pid {t.pid}) exited")
                    program.remove_target(t.pid)
            if not alive:
                return "target-exit"
            if len(alive) != len(self.targets):
                self.targets = alive
            snap.index_new_wakers()
            if now >= next_snap:
                snap.take(program.counters())
                next_snap += self.opts.interval_s
                if next_snap < now:
                    next_snap = now + self.opts.interval_s
            wake = min(x for x in (next_snap, end_at, now + POLL_S) if x is not None)
            time.sleep(max(0.0, wake - time.monotonic()))


def target_record(targets: List[Target]) -> TargetRecord:
    """The ``target`` record: every target, and what named them (one word when it was the
    same for all)."""
    by = sorted({t.by for t in targets})
    return {"type": "target", "processes": [t.record() for t in targets],
            "by": by[0] if len(by) == 1 else by}


def main(argv: Optional[Sequence[str]] = None, out: Optional[IO[str]] = None) -> int:
    opts = parse_args(argv)
    stream = out if out is not None else sys.stdout
    try:
        return Collector(opts, stream).run()
    except BrokenPipeError:
        # The reader went away; nothing left to tell it.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit flush
        except OSError:
            pass
        return 1
