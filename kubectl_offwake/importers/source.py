"""Reads an input (a path or ``-`` for stdin) into text, un-gzipping what it can.

Every importer starts from here so that gzip works for every format (a recording, and BCC
output someone compressed before attaching it to an incident) and so that a cut-off gzip
file still yields everything that was decompressed before the cut.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from typing import List, Tuple

from ..errors import BadInput

GZIP_MAGIC = b"\x1f\x8b"
#: How much of the head decides whether an input is binary.
SNIFF_BYTES = 4096


@dataclass
class InputText:
    """The decoded input and what reading it had to say."""

    name: str
    text: str
    compressed: bool = False
    warnings: List[str] = field(default_factory=list)


def read_input(path: str) -> InputText:
    """Read ``path`` (``-`` is stdin) and decode it; raises BadInput when unreadable."""
    name = "standard input" if path == "-" else path
    data = _read_bytes(path)
    return decode_bytes(data, name)


def decode_bytes(data: bytes, name: str) -> InputText:
    """Decode raw input bytes (gzip or plain) into text for sniffing and parsing."""
    warnings: List[str] = []
    compressed = data[:2] == GZIP_MAGIC
    if compressed:
        data, note = gunzip_prefix(data)
        if note:
            warnings.append(note)
        if not data:
            if note:
                raise BadInput(
                    f"{name} is a gzip file that ends before any data could be decompressed; "
                    "copy the file again"
                )
            raise BadInput(f"{name} is an empty gzip file; pass a recording or offwaketime output")
    if not data or data.isspace():
        raise BadInput(f"{name} is empty; pass a recording or BCC offwaketime output")
    if looks_binary(data[:SNIFF_BYTES]):
        raise BadInput(
            f"{name} is binary data, not a kubectl-offwake recording or BCC offwaketime output; "
            "pass a .jsonl(.gz) recording or offwaketime's text or -f output"
        )
    text = data.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return InputText(name=name, text=text, compressed=compressed, warnings=warnings)


def _read_bytes(path: str) -> bytes:
    if path == "-":
        try:
            return sys.stdin.buffer.read()
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot read standard input ({exc}); pass a file instead") from None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory; pass a recording file") from None
    except PermissionError:
        raise BadInput(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}; check the file") from None


def gunzip_prefix(data: bytes) -> Tuple[bytes, str]:
    """Decompress every gzip member, keeping what precedes damage or a cut.

    Returns the bytes and a note (empty when the stream was whole). ``gzip.decompress``
    would throw away everything on a truncated file; a recording cut off by a crashed
    laptop must still show what it caught.
    """
    out: List[bytes] = []
    rest = data
    note = ""
    while rest:
        if rest[:2] != GZIP_MAGIC:
            if rest.strip(b"\x00"):
                note = "ignored data after the end of the compressed input"
            break
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(inflater.decompress(rest))
        except zlib.error:
            # Corrupt in the middle: keep what a fresh inflater can give up to the damage.
            out.append(_inflate_until_error(rest))
            note = "the compressed input is damaged; kept what could be decompressed before it"
            break
        if not inflater.eof:
            out.append(inflater.flush())
            note = "the compressed input is truncated; kept what was decompressed before the cut"
            break
        rest = inflater.unused_data
    return b"".join(out), note


def _inflate_until_error(data: bytes, chunk: int = 65536) -> bytes:
    """Inflate up to the first byte zlib rejects: big steps, then byte by byte near it."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out: List[bytes] = []
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        saved = inflater.copy()
        try:
            out.append(inflater.decompress(piece))
        except zlib.error:
            inflater = saved
            for i in range(len(piece)):
                try:
                    out.append(inflater.decompress(piece[i:i + 1]))
                except zlib.error:
                    break
            break
    return b"".join(out)


def looks_binary(head: bytes) -> bool:
    """True for data no text tool would print: mostly NULs, control or invalid bytes.

    A ratio, not "any NUL": a capture whose tail a crash filled with zeros is still a
    capture, and its damaged blocks are skipped one by one later.
    """
    head = head[:SNIFF_BYTES]
    if not head:
        return False
    text = head.decode("utf-8", "replace")
    junk = text.count("\ufffd") + len(text) - len(text.translate(_DROP_CONTROL))
    return junk * 10 > len(text)


_DROP_CONTROL = {c: None for c in range(32) if chr(c) not in "\t\n\r\f\v"}
