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
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

from .schema import COMMIT_TYPES, DELTA_TYPES, RECORD_TYPES, SCHEMA_VERSION, WireError

#: The C scanner under ``json.loads``. A line is stripped before it is decoded, so it has no
#: JSON whitespace at either end and ``loads`` reduces to this call plus an end check; calling
#: it directly skips three Python-level wrappers and two regex matches per line.
# (JSONDecoder sets scan_once in __init__; typeshed does not declare it.)
_SCAN: Callable[[str, int], Tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _decode(text: str) -> Any:
    """``json.loads(text)`` for a stripped, non-empty line; raises ValueError when it is not
    exactly one JSON value (just as ``loads`` does, if with a terser message)."""
    if type(text) is not str:  # bytes from a caller that did not decode: loads takes them
        return json.loads(text)
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


@dataclass
class ReadResult:
    """Committed records plus what the reader had to say about the input."""

    records: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    #: The stream's ``end`` record arrived (False: it was cut off).
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
            record = _decode(text)
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

    def records(self, lines: Iterable[str]) -> Iterator[dict]:
        """Committed records of many lines: exactly what :meth:`feed` returns line by line.

        A saved recording has ~150k lines per 100k edges, so the common line (after the
        hello: one JSON object of a known type with its required fields) takes an inlined
        path without feed's per-line lists. Anything else, including every error, is handed
        to :meth:`feed` before this loop changes any state, so feed stays the one place
        that decides what an odd line means.
        """
        scan = _SCAN
        known = RECORD_TYPES
        for line in lines:
            if not self.saw_hello or type(line) is not str:
                yield from self.feed(line)
                continue
            text = line.strip()
            if not text:
                self._line_no += 1
                continue
            try:
                record, end = scan(text, 0)
            except (StopIteration, ValueError):
                end = -1
            if end != len(text) or type(record) is not dict:
                yield from self.feed(line)
                continue
            rtype = record.get("type")
            required = known.get(rtype) if type(rtype) is str else None
            if required is None or not required.issubset(record):
                yield from self.feed(line)  # counted as skipped or malformed there
                continue
            self._line_no += 1
            seq = record.get("seq")
            if isinstance(seq, int):
                if seq <= self.last_seq:
                    continue
                self.last_seq = seq
            if rtype in DELTA_TYPES:
                self._pending.append(record)
            elif rtype in COMMIT_TYPES:
                out = self._pending
                out.append(record)
                self._pending = []
                if rtype == "end":
                    self.ended = True
                yield from out
            else:
                yield record

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
    yield from decoder.records(lines)
    if not decoder.saw_hello:
        raise WireError("the input is empty; pass a recording or BCC offwaketime output")
    result.ended = decoder.ended
    if not decoder.ended and not decoder.uncommitted:
        result.warnings.append("the recording has no 'end' record; the collector was cut off")
    result.warnings.extend(decoder.warnings())


def read_records(lines: Iterable[str]) -> ReadResult:
    """All committed records of a stream, with warnings about what was dropped."""
    result = ReadResult()
    result.records = list(iter_records(lines, result))
    return result
