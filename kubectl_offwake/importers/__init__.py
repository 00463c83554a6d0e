"""Turns inputs (our wire recordings, BCC offwaketime text and folded output) into a Recording.

:func:`load_input` is what ``kubectl offwake report`` calls: it reads a path (``-`` for
stdin), undoes gzip, recognises the format from the first meaningful lines, and hands the
text to the one parser for it. Anything it cannot read raises
:class:`~kubectl_offwake.errors.BadInput` with one sentence; anything it can partly read is
kept, with a warning in ``Recording.warnings`` saying what was dropped.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

from ..analysis.model import Recording
from ..errors import BadInput
from .builder import RecordingBuilder
from .offwaketime_folded import looks_like_folded, parse_folded
from .offwaketime_text import looks_like_text, parse_text
from .source import InputText, decode_bytes, read_input
from .wire_import import parse_wire

__all__ = [
    "RecordingBuilder",
    "detect_format",
    "load_bytes",
    "load_input",
    "load_text",
    "parse_folded",
    "parse_text",
    "parse_wire",
]

#: How many meaningful lines the sniffer reads before it gives up.
_SNIFF_LINES = 2000

#: offcputime's per-stack footer, ``    -                envoy (4182)``: a common mix-up.
_OFFCPUTIME_TEXT = re.compile(r"^\s+-\s{8,}\S.* \(\d+\)\s*$", re.MULTILINE)
_SNIFF_CHARS = 1 << 20

_HELLO = re.compile(r'\{\s*"type"\s*:\s*"hello"')

FORMAT_WIRE = "wire"
FORMAT_TEXT = "offwaketime-text"
FORMAT_FOLDED = "offwaketime-folded"


def load_input(path: str) -> Recording:
    """Read a recording or BCC offwaketime capture from ``path`` (``-`` is stdin)."""
    return _load(read_input(path))


def load_bytes(data: bytes, name: str = "input") -> Recording:
    """Like :func:`load_input` for bytes already in memory."""
    return _load(decode_bytes(data, name))


def load_text(text: str, name: str = "input") -> Recording:
    """Like :func:`load_input` for decoded text."""
    if not text.strip():
        raise BadInput(f"{name} is empty; pass a recording or BCC offwaketime output")
    return _load(InputText(name=name, text=text))


def detect_format(text: str) -> Optional[str]:
    """``wire``, ``offwaketime-text``, ``offwaketime-folded``, or None when none fits."""
    seen = 0
    for line in _head_lines(text):
        stripped = line.strip()
        if not stripped or stripped == "^C":
            continue
        if stripped.startswith("{") and (seen == 0 or _HELLO.match(stripped)):
            return FORMAT_WIRE  # a hello after a few lines: `kubectl logs ... 2>&1` chatter
        if looks_like_text(line):
            return FORMAT_TEXT
        if looks_like_folded(line):
            return FORMAT_FOLDED
        seen += 1
        if seen >= _SNIFF_LINES:
            break
    return None


def _head_lines(text: str) -> Iterator[str]:
    """Lines from the start of ``text`` without splitting all of a 100 MB capture."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end]
        start = end + 1


def _load(data: InputText) -> Recording:
    fmt = detect_format(data.text)
    if fmt == FORMAT_WIRE:
        recording = parse_wire(data.text, data.name)
    elif fmt == FORMAT_TEXT:
        recording = parse_text(data.text, data.name)
    elif fmt == FORMAT_FOLDED:
        recording = parse_folded(data.text, data.name)
    elif _OFFCPUTIME_TEXT.search(data.text[:_SNIFF_CHARS]):
        raise BadInput(
            f"{data.name} is BCC offcputime output, which has no waker stacks; "
            "capture offwaketime's output instead"
        )
    else:
        raise BadInput(
            f"{data.name} is neither a kubectl-offwake recording nor BCC offwaketime output; "
            "pass a .jsonl(.gz) recording or offwaketime's text or -f output"
        )
    # The gzip note first: it explains any cut the parsers then report.
    recording.warnings[:0] = data.warnings
    return recording
