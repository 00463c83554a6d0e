"""Pausing Python's cyclic garbage collector around the big, acyclic batch steps."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block; it resumes afterwards if it was on.

    Analysis and rendering allocate millions of small acyclic objects next to a report that
    holds millions more; every full collection walks all of them, which on a 100k-edge
    recording cost seconds per step. Reference counting still frees what is dropped.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
