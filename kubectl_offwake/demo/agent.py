"""The pilot-agent stand-in: Envoy's parent, talking to it over a unix socket.

Like Istio's pilot-agent it starts Envoy as its child, serves Envoy's configuration over
a unix socket (``xds.py``: REST xDS, optionally pushing a change on every poll, which
Envoy's main thread hands to every worker), and keeps checking on Envoy through its admin
interface: ``/ready`` often, and ``/stats`` less often. The admin API listens on a unix
socket here too, so every poll and every xDS answer wakes Envoy's main thread with a
unix-socket write whose waker is this process.

Run as ``python -m kubectl_offwake.demo.agent --admin-socket PATH [--xds-socket PATH
[--xds-push]] [...] -- ENVOY ARGS``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

from ..collector.envoy_stats import UnixHTTPConnection
from ..prctl import die_with_parent, pin, set_comm
from .xds import XdsServer

COMM = "pilot-agent"


def admin_get(path: str, conn: UnixHTTPConnection) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


class Agent:
    def __init__(self, admin_socket: str, interval: float, stats_every: int) -> None:
        self.admin_socket = admin_socket
        self.interval = interval
        self.stats_every = stats_every
        self.stopping = False
        self.envoy: Optional[subprocess.Popen] = None

    def start_envoy(self, argv: List[str], cpus: Optional[List[int]], log_path: str) -> None:
        def child_setup() -> None:
            die_with_parent(signal.SIGKILL)
            pin(cpus)

        with open(log_path, "ab") as log:
            self.envoy = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=child_setup, close_fds=True,
            )

    def poll_forever(self) -> int:
        conn: Optional[UnixHTTPConnection] = None
        polls = 0
        while not self.stopping:
            assert self.envoy is not None
            if self.envoy.poll() is not None:
                return self.envoy.returncode or 1
            try:
                if conn is None:
                    conn = UnixHTTPConnection(self.admin_socket)
                if polls % self.stats_every == 0:
                    admin_get("/stats?usedonly", conn)
                else:
                    admin_get("/ready", conn)
                polls += 1
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None  # Envoy not listening yet, or it closed the connection
            time.sleep(self.interval)
        return 0

    def stop(self, *_: object) -> None:
        self.stopping = True

    def stop_envoy(self, timeout: float = 5.0) -> None:
        if self.envoy is None or self.envoy.poll() is not None:
            return
        self.envoy.terminate()
        try:
            self.envoy.wait(timeout)
        except subprocess.TimeoutExpired:
            self.envoy.kill()
            self.envoy.wait()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pilot-agent stand-in")
    parser.add_argument("--admin-socket", required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--stats-every", type=int, default=10,
                        help="every Nth poll asks for /stats instead of /ready")
    parser.add_argument("--xds-socket", help="serve Envoy's clusters (REST xDS) here")
    parser.add_argument("--xds-push", action="store_true",
                        help="change a cluster on every xDS answer (a push per poll)")
    parser.add_argument("--cpu", type=int, action="append", help="pin Envoy to this CPU")
    parser.add_argument("--envoy-log", default=os.devnull)
    parser.add_argument("envoy", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    envoy_argv = args.envoy[1:] if args.envoy[:1] == ["--"] else args.envoy
    if not envoy_argv:
        parser.error("give the Envoy command after --")
    set_comm(COMM)
    die_with_parent()
    agent = Agent(args.admin_socket, args.interval, max(1, args.stats_every))
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    xds = XdsServer(args.xds_socket, args.xds_push) if args.xds_socket else None
    if xds is not None:
        xds.start()  # before Envoy: its first fetch waits for an answer
    agent.start_envoy(envoy_argv, args.cpu, args.envoy_log)
    try:
        return agent.poll_forever()
    finally:
        agent.stop_envoy()
        if xds is not None:
            xds.close()


if __name__ == "__main__":
    sys.exit(main())
