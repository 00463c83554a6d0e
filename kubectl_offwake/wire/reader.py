"""Decodes wire records from lines of a file or a log stream (files are opened, and
un-gzipped, by ``kubectl_offwake.importers.source``).

The decoder is incremental so the Kubernetes log follower and the file reader share it:
records are released only when a ``snapshot`` or ``end`` commits them, records with a
``seq`` already seen are dropped (a reconnecting log stream repeats itself), unknown types
are skipped, and a schema this reader does not know is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional

from .schema import COMMIT_TYPES, DELTA_TYPES, RECORD_TYPES, SCHEMA_VERSION, WireError


@dataclass
class ReadResult:
    """Committed records plus what the reader had to say about the input."""

    records: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    truncated: bool = False
    ended: bool = False


class StreamDecoder:
    """Turns lines into committed records; keeps its place across reconnects."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.saw_hello = False
        self.ended = False
        self.bad_lines = 0
        self.skipped_types: dict = {}
        self._pending: List[dict] = []
        self._line_no = 0

    def feed(self, line: str) -> List[dict]:
        """Decode one line; returns the records it commits (possibly none)."""
        self._line_no += 1
        text = line.strip()
        if not text:
            return []
        try:
            record = json.loads(text)
        except ValueError:
            if not self.saw_hello:
                raise WireError(
                    f"line {self._line_no} is not JSON, so this is not a recording of this tool; "
                    "pass a recording or BCC offwaketime output"
                ) from None
            self.bad_lines += 1
            return []
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            if not self.saw_hello:
                raise WireError(f"line {self._line_no} is not a wire record; pass a recording")
            self.bad_lines += 1
            return []
        seq = record.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return []
            self.last_seq = seq
        rtype = record["type"]
        if not self.saw_hello:
            if rtype != "hello":
                raise WireError(
                    f"the stream starts with a {rtype!r} record instead of 'hello'; "
                    "it is not a complete recording"
                )
            schema = record.get("schema")
            if schema != SCHEMA_VERSION:
                raise WireError(
                    f"this recording uses wire schema {schema!r} but this kubectl-offwake reads "
                    f"schema {SCHEMA_VERSION}; upgrade kubectl-offwake to read it"
                )
            self.saw_hello = True
        required = RECORD_TYPES.get(rtype)
        if required is None:
            self.skipped_types[rtype] = self.skipped_types.get(rtype, 0) + 1
            return []
        if not required.issubset(record):
            self.bad_lines += 1
            return []
        if rtype in DELTA_TYPES:
            self._pending.append(record)
            return []
        if rtype in COMMIT_TYPES:
            out = self._pending
            out.append(record)
            self._pending = []
            if rtype == "end":
                self.ended = True
            return out
        return [record]

    @property
    def uncommitted(self) -> int:
        return len(self._pending)

    def warnings(self) -> List[str]:
        notes = []
        if self.bad_lines:
            notes.append(f"skipped {self.bad_lines} malformed record(s)")
        if self._pending:
            notes.append(
                f"the recording stops mid-snapshot; dropped {len(self._pending)} record(s) "
                "after the last complete snapshot"
            )
        return notes


def iter_records(lines: Iterable[str], result: Optional[ReadResult] = None) -> Iterator[dict]:
    """Committed records from lines of a wire stream."""
    decoder = StreamDecoder()
    result = result if result is not None else ReadResult()
    for line in lines:
        yield from decoder.feed(line)
    if not decoder.saw_hello:
        raise WireError("the input is empty; pass a recording or BCC offwaketime output")
    result.ended = decoder.ended
    if not decoder.ended:
        result.truncated = True
        if not decoder.uncommitted:
            result.warnings.append("the recording has no 'end' record; the collector was cut off")
    result.warnings.extend(decoder.warnings())


def read_records(lines: Iterable[str]) -> ReadResult:
    """All committed records of a stream, with warnings about what was dropped."""
    result = ReadResult()
    result.records = list(iter_records(lines, result))
    return result
