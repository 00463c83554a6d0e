"""Turns the text of a saved wire stream into a Recording (gzip already undone)."""

from __future__ import annotations

from typing import List

from ..analysis.model import Recording
from ..errors import BadInput
from ..wire import ReadResult, WireError, iter_records
from .builder import RecordingBuilder


def parse_wire(text: str, name: str = "input") -> Recording:
    """Every committed record of the stream; what a cut or a bad line lost becomes a warning."""
    builder = RecordingBuilder()
    result = ReadResult()
    try:
        for record in iter_records(_lines(text), result):
            builder.add(record)
    except WireError as exc:
        raise BadInput(f"{name}: {exc}") from None
    recording = builder.finish()
    recording.source["input"] = name
    recording.warnings.extend(result.warnings)
    return recording


def _lines(text: str) -> List[str]:
    return text.split("\n")  # JSON escapes its own line separators; only "\n" ends a line
