"""Turns the text of a saved wire stream into a Recording (gzip already undone)."""

from __future__ import annotations

from typing import List

from ..analysis.model import Recording
from ..errors import BadInput
from ..gcpause import gc_paused
from ..wire import ReadResult, WireError, iter_records
from .builder import RecordingBuilder


def parse_wire(text: str, name: str = "input") -> Recording:
    """Every committed record of the stream; what a cut or a bad line lost becomes a warning."""
    builder = RecordingBuilder()
    result = ReadResult()
    lines = _lines(text)
    skipped = _leading_chatter(lines)
    if skipped:
        result.warnings.append(f"ignored {skipped} line(s) of other output before the recording")
        lines = lines[skipped:]
    add = builder.add
    try:
        # Decoding makes millions of small acyclic objects (and the recording keeps most
        # of them); cyclic collections in between would walk them all again and again.
        with gc_paused():
            for record in iter_records(lines, result):
                add(record)
    except WireError as exc:
        raise BadInput(f"{name}: {exc}") from None
    recording = builder.finish()
    recording.source["input"] = name
    recording.warnings.extend(result.warnings)
    return recording


def _leading_chatter(lines: List[str]) -> int:
    """How many non-JSON lines (kubectl's "Defaulted container ..." and such) precede the
    first JSON line; 0 when the stream starts with JSON."""
    for index, line in enumerate(lines[:_MAX_CHATTER]):
        if line.lstrip().startswith("{"):
            return index if any(s.strip() for s in lines[:index]) else 0
    return 0


_MAX_CHATTER = 2000


def _lines(text: str) -> List[str]:
    return text.split("\n")  # JSON escapes its own line separators; only "\n" ends a line
