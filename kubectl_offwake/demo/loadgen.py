"""Bounded load for the demo: ``wrk`` with a Lua ``delay()`` to cap each connection's rate.

Debian's ``wrk`` has no rate option; a per-request delay keeps the load gentle on a small
machine and gives Envoy's workers idle time to be woken from (the point of the demo).
``Connection: close`` makes every request a new connection (wrk reconnects when the
server closes), and a padding header gives a verbose access log something to write.
"""

from __future__ import annotations

import os
from typing import List

from .envoy_config import PAD_HEADER
from .settings import Load


def write_script(workdir: str, load: Load) -> str:
    path = os.path.join(workdir, "pace.lua")
    with open(path, "w") as handle:
        handle.write(f"function delay()\n  return {int(load.delay_ms)}\nend\n")
    return path


def command(wrk: str, url: str, script: str, seconds: float, load: Load) -> List[str]:
    argv = [wrk, "-t1", f"-c{load.connections}", f"-d{max(1, int(seconds))}s", "-s", script]
    if load.new_connection:
        argv += ["-H", "Connection: close"]
    if load.header_bytes:
        argv += ["-H", f"{PAD_HEADER}: {'x' * load.header_bytes}"]
    return [*argv, url]
