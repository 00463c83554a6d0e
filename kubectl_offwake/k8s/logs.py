"""Following a collector's log as bytes, resuming when the connection drops.

A followed log stream can end early: an API server or kubelet restart, a proxy idle
timeout, a network blip. The follower reconnects and reads the log again from the start;
the stream's consumer (the run pipeline's sink, :mod:`kubectl_offwake.pipeline.sink`)
drops the lines it already has by their ``seq``, so nothing is lost and nothing is counted
twice. Only whole lines are handed on: a line cut by the drop comes again after the
reconnect.

The follower takes its stream and pod state as callables, so its resume logic is tested
against scripted streams (tests/unit/test_k8s_logs.py) and runs unchanged on the API.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Iterator, Optional, Protocol

#: Give up after this many reconnects in a row that brought nothing new.
MAX_IDLE_RECONNECTS = 8


class LineConsumer(Protocol):
    """What a followed log feeds (the run pipeline's ``StreamSink``)."""

    @property
    def ended(self) -> bool:
        """The stream's last record arrived."""

    @property
    def fatal(self) -> Optional[str]:
        """Why the stream cannot be read, once it showed it cannot."""

    def feed_line(self, line: str) -> bool:
        """Take one whole line; True when it was new."""


class LogFollower:
    """Reads a log until its stream ends, reconnecting when the connection drops."""

    def __init__(self, consumer: LineConsumer) -> None:
        self.consumer = consumer
        self.reconnects = 0
        self.error: Optional[str] = None  # the last transport error (we reconnect)

    def feed_chunks(self, chunks: Iterable[bytes]) -> int:
        """Hand on each whole line of a byte stream; a trailing partial line is dropped
        (it comes again). Returns how many lines were new."""
        buffer = b""
        new = 0
        for chunk in chunks:
            if self.consumer.fatal:
                break
            if not chunk:
                continue
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if self.consumer.feed_line(raw.decode("utf-8", "replace")):
                    new += 1
        return new

    def follow(
        self,
        open_stream: Callable[[bool], Iterable[bytes]],
        finished: Callable[[], bool],
        stop: Optional[threading.Event] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> str:
        """Read until the stream's end or the container is gone.

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
            if self.consumer.fatal:
                return "error"
            if self.consumer.ended:
                return "end"
            if finished():
                try:
                    self.feed_chunks(open_stream(False))
                except Exception as exc:
                    self.error = _short(exc)
                return "end" if self.consumer.ended else "exited"
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
