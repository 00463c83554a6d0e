"""How the findings' sentences write shares and counts (durations: ``kubectl_offwake.units``)."""

from __future__ import annotations


def pct(x: float) -> str:
    """A share as a whole percentage: findings speak in round numbers."""
    return f"{x * 100:.0f}%"


def plural(n: int, word: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def and_more(extra: int, word: str) -> str:
    """`` (and 2 more threads)`` after the worst case a finding names; '' when none."""
    return f" (and {plural(extra, word)})" if extra > 0 else ""
