"""The noisy neighbour: a batch job pinned to the CPU Envoy runs on.

Run as ``python -m kubectl_offwake.demo.hog --cpu N``. It computes in bursts with a short
pause between them (like a batch worker between work items) and so keeps the CPU busy
most of the time. Envoy's threads wait in the run queue behind it, and each time it comes
back from a pause the scheduler lets it preempt whatever Envoy thread is running: the
report shows Envoy's threads ``preempted-involuntary`` by ``cpu-hog``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import List, Optional

from ..prctl import die_with_parent, pin, set_comm

COMM = "cpu-hog"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="cpu hog")
    parser.add_argument("--cpu", type=int, action="append", required=True)
    parser.add_argument("--burst-ms", type=float, default=3.0)
    parser.add_argument("--pause-ms", type=float, default=0.2)
    parser.add_argument("--nice", type=int, default=0,
                        help="below 0: a neighbour with a larger CPU share, as a pod with a "
                        "larger CPU request gets")
    args = parser.parse_args(argv)
    set_comm(COMM)
    die_with_parent()
    pin(args.cpu)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    burst = args.burst_ms / 1000.0
    pause = args.pause_ms / 1000.0
    clock = time.perf_counter
    x = 0
    while True:
        until = clock() + burst
        while clock() < until:
            for _ in range(200):
                x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        time.sleep(pause)


if __name__ == "__main__":
    sys.exit(main())
