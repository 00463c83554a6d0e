"""Container logs: what a container wrote to stdout and stderr, line by line, with timestamps.

The kubelet's reader threads append; the API server's `pods/log` handler reads, optionally
following (blocking on a condition) until the container instance ends.
"""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path
from typing import IO, List, Optional, Tuple


def _rfc3339_nano(ts: float) -> str:
    d = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int((ts % 1) * 1e9):09d}Z"


class LogBuffer:
    """One container instance's log (a restart starts a new buffer)."""

    def __init__(self, path: Optional[Path] = None) -> None:
        self.cond = threading.Condition()
        self.lines: List[Tuple[float, bytes]] = []
        self.closed = False
        self.path = path
        self._file: Optional[IO[bytes]] = path.open("ab") if path else None

    def append(self, stream: str, data: bytes) -> None:
        ts = _dt.datetime.now(_dt.timezone.utc).timestamp()
        with self.cond:
            self.lines.append((ts, data))
            if self._file is not None:
                # the CRI log format kubelet writes under /var/log/pods
                tag = "F" if data.endswith(b"\n") else "P"
                body = data[:-1] if data.endswith(b"\n") else data
                self._file.write(f"{_rfc3339_nano(ts)} {stream} {tag} ".encode() + body + b"\n")
                self._file.flush()
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
            self.cond.notify_all()

    def pump(self, stream: str, pipe: IO[bytes]) -> None:
        """Read a pipe to EOF, appending whole lines (a last partial line at EOF too)."""
        partial = b""
        while True:
            chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            if not chunk:
                break
            partial += chunk
            while b"\n" in partial:
                line, partial = partial.split(b"\n", 1)
                self.append(stream, line + b"\n")
        if partial:
            self.append(stream, partial)
        pipe.close()

    @staticmethod
    def format(ts: float, data: bytes, timestamps: bool) -> bytes:
        return (_rfc3339_nano(ts).encode() + b" " + data) if timestamps else data
