"""Following a collector's log and decoding its wire stream, resuming when it drops.

A followed log stream can end early: an API server or kubelet restart, a proxy idle
timeout, a network blip. The follower reconnects and reads the log again from the start;
``seq`` numbers make the repeat harmless (records already seen are dropped), so nothing
is lost and nothing is counted twice. Only whole lines are decoded: a line cut by the
drop comes again after the reconnect.

The follower takes its stream and pod-state as callables, so its resume logic is tested
against scripted streams (tests/unit/test_k8s_logs.py) and runs unchanged on the API.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional

from ..wire import StreamDecoder, WireError

_SEQ = re.compile(r'"seq"\s*:\s*(\d+)')

#: Give up after this many reconnects in a row that brought nothing new.
MAX_IDLE_RECONNECTS = 8


class LogFollower:
    """Feeds log lines to a StreamDecoder and keeps the raw lines worth saving."""

    def __init__(self, on_record: Optional[Callable[[dict], None]] = None) -> None:
        self.decoder = StreamDecoder()
        self.lines: List[str] = []  # wire lines in order, each seq once: the recording
        self.records: List[dict] = []  # committed records
        self.text_tail: List[str] = []  # non-JSON output (stderr), last lines only
        self.saved_seq = 0
        self.reconnects = 0
        self.error: Optional[str] = None  # the last transport error (we reconnect)
        self.fatal: Optional[str] = None  # the stream is not ours / not readable
        self._on_record = on_record
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self.decoder.ended

    def feed_line(self, line: str) -> bool:
        """Take one whole line; True when it was new."""
        text = line.strip()
        if not text:
            return False
        if not text.startswith("{"):
            self.text_tail = (self.text_tail + [text])[-20:]
            return False
        match = _SEQ.search(text[:80])
        seq = int(match.group(1)) if match else None
        if seq is None:
            try:
                value = json.loads(text).get("seq")
                seq = value if isinstance(value, int) else None
            except (ValueError, AttributeError):
                self.text_tail = (self.text_tail + [text])[-20:]
                return False
        if seq is not None and seq <= self.saved_seq:
            return False
        try:
            committed = self.decoder.feed(text)
        except WireError as exc:
            self.fatal = str(exc)
            return False
        with self._lock:
            self.lines.append(text)
            if seq is not None:
                self.saved_seq = seq
            self.records.extend(committed)
        if self._on_record is not None:
            for record in committed:
                self._on_record(record)
        return True

    def feed_chunks(self, chunks: Iterable[bytes]) -> int:
        """Decode a byte stream; a trailing partial line is dropped (it comes again)."""
        buffer = b""
        new = 0
        for chunk in chunks:
            if self.fatal:
                break
            if not chunk:
                continue
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if self.feed_line(raw.decode("utf-8", "replace")):
                    new += 1
        return new

    def follow(
        self,
        open_stream: Callable[[bool], Iterable[bytes]],
        finished: Callable[[], bool],
        stop: Optional[threading.Event] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> str:
        """Read until the stream's ``end`` record or the container is gone.

        ``open_stream(follow)`` opens the log from its start; ``finished()`` says the
        container has exited (then one last non-following read picks up the rest).
        Returns why it stopped: "end", "exited", "stalled" or "error".
        """
        idle = 0
        while True:
            new = 0
            try:
                new = self.feed_chunks(open_stream(True))
            except Exception as exc:  # dropped connection, timeout, API error
                self.error = _short(exc)
            if self.fatal:
                return "error"
            if self.ended:
                return "end"
            if finished():
                try:
                    self.feed_chunks(open_stream(False))
                except Exception as exc:
                    self.error = _short(exc)
                return "end" if self.ended else "exited"
            self.reconnects += 1
            idle = 0 if new else idle + 1
            if idle >= MAX_IDLE_RECONNECTS:
                return "stalled"
            if stop is not None and stop.is_set() and idle >= 3:
                return "stalled"
            sleep(min(0.25 * (2 ** idle), 3.0))


def read_chunks(response: object, size: int = 65536) -> Iterator[bytes]:
    """Bytes of a streaming urllib3 response as they arrive (not waiting for ``size``)."""
    read1 = getattr(response, "read1", None)
    try:
        while True:
            chunk = read1(size) if read1 is not None else response.read(size)  # type: ignore[attr-defined]
            if not chunk:
                return
            yield chunk
    finally:
        release = getattr(response, "release_conn", None)
        close = getattr(response, "close", None)
        for fn in (close, release):
            if fn is not None:
                try:
                    fn()
                except Exception:
                    pass


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {text[:200]}"
