"""Live progress while a collector runs: one row per source (a node, or the local host).

Fed with wire records as they arrive (``hello``, ``progress``, ``end``, ``log``). On a
terminal it redraws a small table on stderr a few times a second; anywhere else it stays
quiet and prints only the final lines, so logs and CI output stay readable. The final
lines also say which collector flag to raise when the kernel side lost data.

    with LiveProgress("tracing envoy") as live:
        live.add_source("node-a", duration_s=10)
        live.feed("node-a", record)          # for every record of that source's stream
        live.set_status("node-a", "stopping")

``StepPrinter`` shows set-up steps (the demo's, the Kubernetes path's) the same way.

Everything shown (node and pod names, a collector's messages and counter names) may come
from a node: it goes out neutralized (:mod:`.untrusted`) through consoles that interpret no
rich markup and no emoji codes.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Mapping, Optional, Tuple

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .analysis.vocabulary import traced_field
from .untrusted import neutralize
from .untrusted import rich_text as _text
from .wire.schema import distinct_losses, loss_sentences

#: Statuses that records arriving late must not overwrite.
_FINAL_STATUSES = ("stopping", "done", "failed")


@dataclass
class SourceState:
    """What one collector stream has said so far.

    ``elapsed_s`` is time spent tracing: the collector's ``tracing_s`` (from attach, so not
    counting the BPF compile), or its ``elapsed_s`` where a record has no ``tracing_s`` (the
    same rule the recording builder follows).
    """

    name: str
    duration_s: Optional[float] = None
    status: str = "starting"
    elapsed_s: float = 0.0
    switches: int = 0
    wakeups: int = 0
    edges: int = 0
    lost: Dict[str, int] = field(default_factory=dict)
    map_use: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    end_reason: Optional[str] = None
    message: Optional[str] = None
    _elapsed_at: Optional[float] = None  # monotonic time the last elapsed_s arrived

    def feed(self, record: Mapping[str, Any]) -> None:
        rtype = record.get("type")
        if rtype == "hello":
            duration = _num(record.get("duration_s"))
            if duration:
                self.duration_s = duration
            if self.status not in _FINAL_STATUSES:
                self.status = "attaching"
        elif rtype == "progress":
            if self.status not in _FINAL_STATUSES:
                self.status = "tracing"
            self._set_elapsed(record)
            self.switches = _int(record.get("switches"), self.switches)
            self.wakeups = _int(record.get("wakeups"), self.wakeups)
            self.edges = _int(record.get("edges"), self.edges)
            self._take_lost(record.get("lost"))
            use = record.get("map_use")
            if isinstance(use, dict):
                self.map_use = {
                    str(k): (int(v[0]), int(v[1])) for k, v in use.items()
                    if isinstance(v, (list, tuple)) and len(v) == 2
                    and all(isinstance(x, (int, float)) for x in v)
                }
        elif rtype == "end":
            self.end_reason = str(record.get("reason"))
            self.status = "done" if self.end_reason != "error" else "failed"
            self._set_elapsed(record)
            if self.end_reason == "duration" and self.duration_s:
                self.elapsed_s = self.duration_s
            totals = record.get("totals")
            if isinstance(totals, dict):
                self.switches = _int(totals.get("switches"), self.switches)
                self.wakeups = _int(totals.get("wakeups"), self.wakeups)
                self.edges = _int(totals.get("edges"), self.edges)
            self._take_lost(record.get("lost"))
            self._elapsed_at = None
        elif rtype == "log" and record.get("level") in ("warning", "error"):
            self.message = str(record.get("message"))

    def _set_elapsed(self, record: Mapping[str, Any]) -> None:
        tracing = _num(traced_field(record))
        if tracing is not None:
            self.elapsed_s = tracing
            self._elapsed_at = time.monotonic()

    def _take_lost(self, lost: Any) -> None:
        if isinstance(lost, dict):
            self.lost = {str(k): _int(v, 0) for k, v in lost.items()}

    def shown_elapsed(self, now: Optional[float] = None) -> float:
        """Elapsed time, advanced smoothly between the collector's progress records."""
        if self._elapsed_at is None or self.status != "tracing":
            return self.elapsed_s
        now = time.monotonic() if now is None else now
        value = self.elapsed_s + max(0.0, now - self._elapsed_at)
        return min(value, self.duration_s) if self.duration_s else value

    def summary(self) -> str:
        """One line: how long, how much, what was lost and what to do about it."""
        parts = [f"{self.elapsed_s:.1f} s", f"{self.wakeups:,} wakeups"]
        if self.edges:
            parts.append(f"{self.edges:,} distinct stacks")
        if self.end_reason and self.end_reason != "duration":
            parts.append(f"stopped: {self.end_reason}")
        losses = loss_sentences(self.lost)
        parts.append("; ".join(losses) if losses else "nothing lost")
        return neutralize(f"{self.name}: " + ", ".join(parts))


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value)


def _bar(elapsed: float, duration: Optional[float], width: int = 16) -> str:
    if not duration:
        return ""
    filled = int(round(width * min(1.0, elapsed / duration)))
    return "█" * filled + "░" * (width - filled)


class LiveProgress:
    """The live table (on a terminal) and the final summary lines (always)."""

    def __init__(self, title: str = "tracing", stream: Optional[IO[str]] = None,
                 live: Optional[bool] = None, refresh_per_second: float = 4.0) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.console = _console(self.stream)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.refresh_per_second = refresh_per_second
        self.sources: Dict[str, SourceState] = {}
        self._live: Optional[Live] = None
        self.final_lines: List[str] = []
        self._notice = ""
        #: Every node of a Kubernetes run feeds its row from its own thread.
        self._lock = threading.Lock()

    # -- feeding -------------------------------------------------------------------------

    def add_source(self, name: str, duration_s: Optional[float] = None) -> SourceState:
        with self._lock:
            state = self.sources.get(name)
            if state is None:
                state = SourceState(name, duration_s)
                self.sources[name] = state
            elif duration_s is not None:
                state.duration_s = duration_s
            return state

    def feed(self, name: str, record: Mapping[str, Any]) -> None:
        state = self.add_source(name)
        with self._lock:
            state.feed(record)

    def set_status(self, name: str, status: str, message: Optional[str] = None) -> None:
        state = self.add_source(name)
        with self._lock:
            state.status = status
            if message is not None:
                state.message = message

    def notice(self, text: str) -> None:
        """A line about the whole run (an interruption): under the table on a terminal,
        printed at once anywhere else."""
        if self._live is not None:
            self._notice = text
        else:
            self.console.print(_text(text), soft_wrap=True)

    # -- display -------------------------------------------------------------------------

    def __enter__(self) -> LiveProgress:
        if self.live_enabled:
            self._live = Live(self, console=self.console, transient=True,
                              refresh_per_second=self.refresh_per_second)
            self._live.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(summary=exc_type is None)

    def close(self, summary: bool = True) -> None:
        """Stop redrawing and print the summary lines once (unless ``summary`` is false)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if summary and not self.final_lines:
            self.final_lines = [state.summary() for state in self.sources.values()]
            for line in self.final_lines:
                self.console.print(Text(line), soft_wrap=True)

    def __rich__(self) -> RenderableType:
        table = Table(title=_text(self.title), title_justify="left", box=None, pad_edge=False,
                      show_edge=False)
        for column, justify in (("source", "left"), ("status", "left"), ("elapsed", "right"),
                                ("", "left"), ("remaining", "right"), ("wakeups", "right"),
                                ("stacks", "right"), ("lost", "left")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        now = time.monotonic()
        notes: List[str] = []
        for state in list(self.sources.values()):  # feeders may run in other threads
            elapsed = state.shown_elapsed(now)
            remaining = (f"{max(0.0, state.duration_s - elapsed):.0f} s"
                         if state.duration_s and state.status == "tracing" else "")
            lost = sum(distinct_losses(state.lost).values())
            table.add_row(
                _text(state.name), _text(state.status), f"{elapsed:.1f} s",
                _bar(elapsed, state.duration_s), remaining, f"{state.wakeups:,}",
                f"{state.edges:,}", Text(f"{lost:,}", style="bold red") if lost else "0",
            )
            notes.extend(f"{state.name}: {n}" for n in loss_sentences(state.lost))
            if state.message:
                notes.append(f"{state.name}: {state.message}")
        if self._notice:
            notes.append(self._notice)
        if not notes:
            return table
        return Group(table, *(_text(n, "yellow") for n in notes))


def _console(stream: IO[str]) -> Console:
    """A console that prints strings as they are: no markup, no emoji codes, no highlighting."""
    return Console(file=stream, highlight=False, markup=False, emoji=False)


class StepPrinter:
    """Set-up steps: a spinner on a terminal while working, one line per finished step."""

    def __init__(self, stream: Optional[IO[str]] = None, live: Optional[bool] = None) -> None:
        self.console = _console(stream if stream is not None else sys.stderr)
        self.live_enabled = self.console.is_terminal if live is None else live

    def done(self, text: str) -> None:
        self.console.print(_text(f"✓ {text}"), soft_wrap=True)

    def note(self, text: str) -> None:
        self.console.print(_text(f"  {text}", "dim"), soft_wrap=True)

    def working(self, text: str) -> _Working:
        """A context manager showing ``text`` with a spinner until it exits."""
        return _Working(self, text)


class _Working:
    def __init__(self, printer: StepPrinter, text: str) -> None:
        self.printer = printer
        self.text = text
        self._status: Any = None

    def __enter__(self) -> _Working:
        if self.printer.live_enabled:
            self._status = self.printer.console.status(_text(self.text))
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(_text(text))

