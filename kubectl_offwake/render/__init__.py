"""Output formats. Each module renders a :class:`~kubectl_offwake.analysis.report.Report`
to a text stream and reads nothing else.
"""

from __future__ import annotations

import importlib
import os
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, TextIO

from ..analysis.report import Report
from ..errors import RunFailed
from ..gcpause import gc_paused

#: Format name (the ``--format`` value) → module in this package.
FORMATS = {
    "table": "table",
    "json": "json_report",
    "folded": "folded",
    "speedscope": "speedscope",
    "svg": "svg",
    "html": "html",
}

#: File suffix → format, for guessing ``--format`` from ``--out``.
SUFFIXES = {".json": "json", ".folded": "folded", ".txt": "table", ".svg": "svg",
            ".html": "html", ".htm": "html", ".speedscope.json": "speedscope"}
#: Format → the suffix of a file named for it (the first of :data:`SUFFIXES` for it).
FORMAT_SUFFIXES = {fmt: suffix for suffix, fmt in reversed(SUFFIXES.items())}


@dataclass
class RenderOptions:
    color: bool = False
    width: int = 120
    title: str = "kubectl offwake"


def render(report: Report, fmt: str, out: TextIO, options: Optional[RenderOptions] = None) -> None:
    module = importlib.import_module(f"{__name__}.{FORMATS[fmt]}")
    with gc_paused():
        module.render(report, out, options or RenderOptions())


def guess_format(out_path: Optional[str], default: str = "table") -> str:
    if not out_path:
        return default
    lower = out_path.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return SUFFIXES[suffix]
    return default


def write_report(report: Report, fmt: str, out_path: Optional[str],
                 options: Optional[RenderOptions] = None) -> None:
    """Render to stdout, or to a temporary file renamed into place when complete: an error
    never leaves half a report behind, and a large report is never held twice in memory."""
    options = options or RenderOptions()
    if out_path is None or out_path == "-":
        if fmt == "table" and sys.stdout.isatty():
            options.color = True
            options.width = max(80, min(160, shutil.get_terminal_size((120, 40)).columns))
        render(report, fmt, sys.stdout, options)
        sys.stdout.flush()
        return
    with atomic_output(out_path) as handle:
        render(report, fmt, handle, options)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _cannot_write(path: str, exc: OSError) -> RunFailed:
    return RunFailed(f"cannot write {path}: {exc.strerror}; choose another --out")


@contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """A text stream whose content appears at ``path`` only if the block succeeds. A path
    that is a device or a FIFO (``/dev/null``, a pipe to another program) is written in
    place: renaming a file over it would replace the device, not write to it."""
    try:
        in_place = not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        in_place = False  # nothing there yet (or unreadable: the rename below says why)
    if in_place:
        try:
            with open(path, "w", encoding="utf-8") as handle:
                yield handle
        except OSError as exc:
            raise _cannot_write(path, exc) from None
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".offwake-", dir=directory)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is for sharing
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
