"""Bounded load for the demo: ``wrk`` with a Lua ``delay()`` to cap each connection's rate.

Debian's ``wrk`` has no rate option; a per-request delay keeps the load gentle on a small
machine and gives Envoy's workers idle time to be woken from (the point of the demo).
"""

from __future__ import annotations

import os
from typing import List

CONNECTIONS = 2


def write_script(workdir: str, delay_ms: int) -> str:
    path = os.path.join(workdir, "pace.lua")
    with open(path, "w") as handle:
        handle.write(f"function delay()\n  return {int(delay_ms)}\nend\n")
    return path


def command(wrk: str, url: str, script: str, seconds: float) -> List[str]:
    return [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, int(seconds))}s", "-s", script, url]


def approx_rate(delay_ms: int) -> int:
    """Requests per second if each request takes well under ``delay_ms``."""
    return int(CONNECTIONS * 1000 / max(1, delay_ms))
