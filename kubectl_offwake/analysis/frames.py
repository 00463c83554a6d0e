"""Frame names as the rules compare them.

Tracers print the same kernel function in several ways: BCC may add an offset
(``tcp_v4_rcv+0x5d2`` or ``tcp_v4_rcv+0x5d2/0x1a0``), the compiler adds clone suffixes
(``.isra.0``, ``.constprop.0``, ``.part.0``, ``.cold``, ``.llvm.123``), folded output may
annotate kernel frames (``_[k]``), and our wire stream prints unknown user frames as
``module+0xOFF``. Rules match the bare function name, so every frame is reduced to it
once; results are memoised because a recording repeats the same few thousand frames.
"""

from __future__ import annotations

import re
from typing import Dict

_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?$")
_ANNOTATION = re.compile(r"_\[[kwij]\]$")
_MODULE = re.compile(r"\s+\[[^\]]+\]$")  # "nvme_irq [nvme]" as some printers show modules
# GCC/LLVM clone suffixes; kernel symbols otherwise never contain a dot.
_CLONE = re.compile(r"\.(?:isra|constprop|part|cold|llvm|lto_priv|localalias)(?:\.[0-9A-Za-z_]+)*$")

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_cache: Dict[str, str] = {}


def normalize(frame: str) -> str:
    """The bare symbol name of one frame (idempotent, memoised)."""
    found = _cache.get(frame)
    if found is not None:
        return found
    if _PLAIN.match(frame):  # the common case: already a bare symbol
        if len(_cache) < 200_000:
            _cache[frame] = frame
        return frame
    name = frame.strip()
    if name.startswith(("b'", 'b"')) and name[-1:] in ("'", '"') and len(name) >= 3:
        name = name[2:-1]  # a Python bytes literal, as older BCC printed frames
    name = _MODULE.sub("", name)
    name = _ANNOTATION.sub("", name)
    name = _OFFSET.sub("", name)
    name = _CLONE.sub("", name)
    if len(_cache) < 200_000:
        _cache[frame] = name
    return name
