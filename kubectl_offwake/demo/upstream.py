"""The application behind the sidecar: a small HTTP/1.1 server with keep-alive.

Run as ``python -m kubectl_offwake.demo.upstream --port 8080 [--delay-ms N]``; with a
delay it thinks that long before each answer (a slow upstream: Envoy's worker waits for
it, idle, while the request is in flight).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional

from ..prctl import die_with_parent, set_comm

COMM = "upstream"
BODY = b"hello from the demo app\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body would wait for
    # Envoy's delayed ACK (40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    delay_s = 0.0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.delay_s:
            time.sleep(self.delay_s)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the access log is Envoy's job here."""


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="demo upstream")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="think this long before each answer")
    args = parser.parse_args(argv)
    Handler.delay_s = max(0.0, args.delay_ms) / 1000.0
    set_comm(COMM)
    die_with_parent()
    server = ThreadingHTTPServer((args.address, args.port), Handler)
    server.daemon_threads = True

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
