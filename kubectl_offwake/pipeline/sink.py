"""One collector stream's way in: decode → recording builder → live display → saved file.

Every run feeds each collector's stdout through one :class:`StreamSink`, line by line: the
local subprocess (``local``, ``demo``) and each node of a Kubernetes run, whose log follower
reconnects and reads the log again from its start. So the rules live here once:

- a line already taken (its ``seq`` is not above the last one) is dropped: a reconnect
  repeats nothing, in the recording or the counts;
- a line that is not JSON (BCC's chatter on stdout, a shell's error) is kept apart as the
  stream's text tail, for the error message, never in the recording;
- a stream that is not a wire stream at all stops being read (:attr:`StreamSink.fatal`);
- every wire line is written to the recording file as it comes, and the file is flushed
  whenever a snapshot commits records, so a crash of this process loses nothing committed;
- records the client adds (``identity`` names, a ``failure``) go into the same file and
  the same builder, so a saved recording says what the live report said.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any, Callable, Deque, Mapping, Optional, Sequence, Union

from ..analysis.model import Recording
from ..importers.builder import RecordingBuilder
from ..live import LiveProgress
from ..wire import StreamDecoder, WireError
from .recfile import RecordingFile

_SEQ = re.compile(r'"seq"\s*:\s*(\d+)')
#: Non-JSON lines kept for error messages (the last ones: a traceback ends with its reason).
TEXT_TAIL_LINES = 200
#: Said when a stream that was no failure still stopped before its ``end`` record.
NO_END = ("the collector stopped without its final record; the report covers the snapshots "
          "that arrived")


class StreamSink:
    """One source's stream; ``name`` is what the live display calls it (a node, ``envoy``).

    ``after_hello`` are client records (e.g. the demo's ``identity`` names) placed right
    after the collector's ``hello``; ``on_record`` sees every committed record.
    """

    def __init__(self, name: str, save_path: Optional[str] = None,
                 display: Optional[LiveProgress] = None,
                 after_hello: Optional[Sequence[Mapping[str, Any]]] = None,
                 on_record: Optional[Callable[[Mapping[str, Any]], None]] = None) -> None:
        self.name = name
        self.display = display
        self.builder = RecordingBuilder()
        self.decoder = StreamDecoder()
        self.file = RecordingFile(save_path) if save_path else None
        self.text_tail: Deque[str] = collections.deque(maxlen=TEXT_TAIL_LINES)
        #: Why the stream is not a wire stream, once it has shown it is not.
        self.fatal: Optional[str] = None
        #: The collector's ``end`` record, once it came.
        self.end: Optional[Mapping[str, Any]] = None
        self._after_hello = list(after_hello or [])
        self._on_record = on_record
        self._last_seq = 0
        if display is not None:
            display.add_source(name)

    # -- state -------------------------------------------------------------------------------

    @property
    def saw_hello(self) -> bool:
        return self.decoder.saw_hello

    @property
    def ended(self) -> bool:
        """The collector's ``end`` record arrived: its stream is complete."""
        return self.decoder.ended

    @property
    def snapshots(self) -> int:
        """Snapshots committed so far (0: nothing was traced)."""
        return self.builder.snapshots

    @property
    def recording(self) -> Recording:
        """The recording so far (always current: the builder merges in place)."""
        return self.builder.recording

    @property
    def save_path(self) -> Optional[str]:
        return self.file.path if self.file is not None else None

    # -- feeding -----------------------------------------------------------------------------

    def feed_line(self, line: Union[str, bytes]) -> bool:
        """Take one line of the stream; True when it was a wire line not seen before."""
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        text = text.strip()
        if not text or self.fatal is not None:
            return False
        if not text.startswith("{"):
            self.text_tail.append(text)
            return False
        match = _SEQ.search(text, 0, 80)
        seq = int(match.group(1)) if match else None
        if seq is not None and seq <= self._last_seq:
            return False
        try:
            committed = self.decoder.feed(text)
        except WireError as exc:
            self.fatal = str(exc)
            return False
        if seq is not None:
            self._last_seq = seq
        if self.file is not None:
            self.file.write(text.encode())
        for record in committed:
            self._take(record)
        if self._after_hello and self.decoder.saw_hello:
            for extra in self._after_hello:
                self.add_client_record(extra)
            self._after_hello = []
        if committed and self.file is not None:
            self.file.flush()
        return True

    def _take(self, record: Mapping[str, Any]) -> None:
        if record.get("type") == "end":
            self.end = record
        self.builder.add(record)
        if self.display is not None:
            self.display.feed(self.name, record)
        if self._on_record is not None:
            self._on_record(record)

    def add_failure(self, source: str, reason: str) -> None:
        """The run's word that this source failed, said in the recording itself, so a later
        ``report`` of the file says it is incomplete, and why, as the live report did."""
        self.add_client_record({"type": "failure", "source": source, "reason": reason})

    def add_client_record(self, record: Mapping[str, Any]) -> None:
        """A record of the client's own (no ``seq``: not the collector's numbering)."""
        if self.file is not None:
            self.file.write(json.dumps(record, separators=(",", ":")).encode())
            self.file.flush()
        self.builder.add(record)

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; a stream that never said ``hello`` leaves none behind."""
        if self.file is not None:
            if self.decoder.saw_hello:
                self.file.close()
            else:
                self.file.discard()

    def discard(self) -> None:
        """Remove the file (nothing was traced: no empty recording left behind)."""
        if self.file is not None:
            self.file.discard()

    def finish(self) -> Recording:
        """The recording with every warning about the stream itself; safe to call again."""
        recording = self.builder.finish()
        notes = self.decoder.warnings()
        if not self.decoder.ended and not recording.failures:
            notes.append(NO_END)
        for note in notes:
            if note not in recording.warnings:
                recording.warnings.append(note)
        return recording
