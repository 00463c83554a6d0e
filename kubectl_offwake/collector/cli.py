"""Command line of the collector: ``python3 -m kubectl_offwake.collector --pid 123 ...``."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..wire.schema import MAP_SIZE_OPTIONS
from .bpfprog import MapSizes

#: The :class:`MapSizes` field each map-size option sets.
_SIZE_FIELDS = {"--stack-storage-size": "stack_storage", "--agg-size": "agg",
                "--start-size": "start", "--oncpu-size": "oncpu"}


@dataclass
class Options:
    pids: List[int] = field(default_factory=list)
    comm: Optional[str] = None
    container_ids: List[str] = field(default_factory=list)
    duration_s: Optional[float] = None
    interval_s: float = 5.0
    min_block_us: float = 1.0
    sizes: MapSizes = field(default_factory=MapSizes)
    node_name: Optional[str] = None
    headers: Optional[str] = None
    wait_s: float = 0.0
    extra_cflags: List[str] = field(default_factory=list)

    def map_sizes(self) -> Dict[str, int]:
        """This run's map sizes by the option that sets each (the ``hello`` says them)."""
        return {flag: getattr(self.sizes, name) for flag, name in _SIZE_FIELDS.items()}


def duration_seconds(text: str) -> Optional[float]:
    """``10``, ``10s``, ``500ms``, ``2m``, ``1h`` -> seconds; None for anything else. The
    one duration grammar: the plugin's options read durations by it too."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]
    return float(m.group(1)) * scale


def parse_duration(text: str) -> float:
    seconds = duration_seconds(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 10, 10s or 2m")
    return seconds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above zero")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="offwake-collector",
        description="Trace why target threads leave the CPU and who wakes them; writes "
        "kubectl-offwake wire records (JSON lines) to stdout.",
    )
    p.add_argument("--pid", type=_positive_int, action="append", default=[],
                   help="trace this process (repeatable)")
    p.add_argument("--comm", help="trace processes with this name (or, with --container-id, "
                   "the process of that name inside the container)")
    p.add_argument("--container-id", action="append", default=[],
                   help="trace Envoy in this container (repeatable; containerd://ID accepted)")
    p.add_argument("--duration", type=parse_duration, default=None,
                   help="stop after this long (default: until SIGTERM/SIGINT)")
    p.add_argument("--interval", type=parse_duration, default=5.0,
                   help="snapshot interval (default 5s)")
    p.add_argument("--min-block-us", type=float, default=1.0,
                   help="ignore sleeps (and run-queue waits of preempted threads) shorter "
                   "than this (default 1)")
    defaults = MapSizes()
    for flag, name in _SIZE_FIELDS.items():
        p.add_argument(flag, type=_positive_int, default=getattr(defaults, name),
                       help=MAP_SIZE_OPTIONS[flag])
    p.add_argument("--max-targets", type=_positive_int, default=256)
    p.add_argument("--node-name", help="node name to put in the hello record")
    p.add_argument("--headers", help="kernel header tree to compile against")
    p.add_argument("--wait", type=parse_duration, default=0.0,
                   help="keep looking for targets this long before giving up")
    p.add_argument("--exact-stacks", action="store_true",
                   help="walk every kernel stack instead of reusing the kernel stack last "
                   "seen with the same user stack (slower, exact)")
    p.add_argument("--preempt-user-stacks", action="store_true",
                   help="record full kernel and user stacks where a thread was preempted "
                   "(a profiler-like sample: many distinct stacks on busy threads)")
    p.add_argument("--cflag", action="append", default=[], help=argparse.SUPPRESS)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
    p = build_parser()
    ns = p.parse_args(argv)
    if not (ns.pid or ns.comm or ns.container_id):
        p.error("name a target: --pid, --comm or --container-id")
    if ns.interval <= 0:
        p.error("--interval must be above zero")
    return Options(
        pids=list(ns.pid), comm=ns.comm, container_ids=list(ns.container_id),
        duration_s=ns.duration or None, interval_s=ns.interval,
        min_block_us=max(0.0, ns.min_block_us),
        sizes=MapSizes(stack_storage=ns.stack_storage_size, agg=ns.agg_size,
                       start=ns.start_size, targets=ns.max_targets, oncpu=ns.oncpu_size),
        node_name=ns.node_name, headers=ns.headers,
        wait_s=ns.wait, extra_cflags=list(ns.cflag) + (["-DNO_KCACHE"] if ns.exact_stacks else [])
        + (["-DPREEMPT_USER_STACKS"] if ns.preempt_user_stacks else []),
    )
