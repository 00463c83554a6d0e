"""The kubelet stand-in: readiness probes over fresh TCP connections, from the host.

kubelet's HTTP probes open a new connection to the pod IP for every probe. This process
runs on the host side of the demo's veth pair and does the same against Envoy's health
listener, so Envoy's workers are woken by connections arriving from outside the pod.

Run as ``python -m kubectl_offwake.demo.prober --host IP --port 15021 [--interval 0.1]``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from typing import List, Optional

from ..prctl import die_with_parent, set_comm

COMM = "kubelet"


def probe(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """One HTTP GET on a new connection, closed once the answer is read (as kubelet does:
    waiting for the server to close would sit out Envoy's delayed-close timeout)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.30\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while not _complete(data):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole response (headers and Content-Length bytes of body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return len(body) >= int(value.strip())
            except ValueError:
                return True
    return True


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="kubelet stand-in")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/healthz/ready")
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args(argv)
    set_comm(COMM)
    die_with_parent()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not stopping:
        probe(args.host, args.port, args.path)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
