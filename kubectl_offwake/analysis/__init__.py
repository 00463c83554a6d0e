"""Pure analysis: classify every wakeup, aggregate, and draw findings from a Recording."""

from __future__ import annotations

from .analyze import analyze

__all__ = ["analyze"]
