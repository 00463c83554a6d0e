"""Writes wire records: one compact JSON object per line, numbered by ``seq``."""

from __future__ import annotations

import json
import threading
from typing import IO, Any, Dict

from .schema import WireRecord


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

    def emit(self, record: WireRecord) -> None:
        """Write ``record`` under the next ``seq``.

        Typed as a :data:`~kubectl_offwake.wire.schema.WireRecord` so that mypy checks every
        writer's record against its TypedDict; ``type`` goes first on the line (readers
        sniff a recording by its first key) and ``seq`` second.
        """
        with self._lock:
            self._seq += 1
            line: Dict[str, object] = {"type": record["type"], "seq": self._seq}
            line.update(record)
            line["seq"] = self._seq
            self._stream.write(json.dumps(line, separators=(",", ":"), default=_default))
            self._stream.write("\n")

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(value).__name__} on the wire")
