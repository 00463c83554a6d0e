"""Writes wire records: one compact JSON object per line, numbered by ``seq``."""

from __future__ import annotations

import json
import threading
from typing import IO, Any


class WireWriter:
    """Numbers and writes records; thread-safe so a signal-driven flush cannot interleave."""

    def __init__(self, stream: IO[str], start_seq: int = 0) -> None:
        self._stream = stream
        self._seq = start_seq
        self._lock = threading.Lock()

    @property
    def seq(self) -> int:
        """The ``seq`` of the last record written."""
        return self._seq

    def emit(self, record_type: str, **fields: Any) -> dict:
        with self._lock:
            self._seq += 1
            record = {"type": record_type, "seq": self._seq}
            record.update(fields)
            self._stream.write(json.dumps(record, separators=(",", ":"), default=_default))
            self._stream.write("\n")
            return record

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(value).__name__} on the wire")
