"""The saved recording: the wire stream written as it arrives, so a crash keeps what came.

gzip when the name ends in ``.gz`` (flushed with ``Z_SYNC_FLUSH`` at every commit, so the
file read back at any moment decodes up to its last snapshot), plain lines otherwise.
"""

from __future__ import annotations

import gzip
import os
from typing import BinaryIO, Optional, Union

from ..errors import RunFailed


class RecordingFile:
    """One recording being written; every method is a no-op once it is closed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0
        try:
            self._handle: Optional[Union[gzip.GzipFile, BinaryIO]] = (
                gzip.GzipFile(path, "wb") if path.endswith(".gz")  # noqa: SIM115
                else open(path, "wb"))  # noqa: SIM115
        except OSError as exc:
            raise RunFailed(
                f"cannot write the recording to {path}: {exc.strerror}; choose another --save"
            ) from None

    def write(self, line: bytes) -> None:
        if self._handle is not None:
            self._handle.write(line if line.endswith(b"\n") else line + b"\n")
            self.lines += 1

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Close and remove it: nothing worth keeping arrived."""
        self.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
