"""pilot-agent's xDS stand-in: Envoy's clusters served over REST xDS on a unix socket.

In an Istio pod Envoy fetches its configuration from pilot-agent over a unix socket
(pilot-agent relays istiod's pushes). Here Envoy polls this server (CDS, REST/JSON, every
``refresh_delay``) through a cluster whose address is the socket. Each answer either
repeats the last version or, when pushing, changes one cluster: Envoy's main thread
applies it (``cluster_manager.cds.update_success``, ``cluster_modified``) and posts the
new cluster to every worker, which is the fan-out a push storm causes. The answer wakes
Envoy's main thread over the unix socket, from this process, as a push does in a pod.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional, Tuple

#: The cluster the pushes change (named as Istio names an outbound cluster).
PUSHED_CLUSTER = "outbound|9080||reviews.demo.svc.cluster.local"
CLUSTERS_PATH = "/v3/discovery:clusters"


def clusters_response(version: int) -> dict:
    """A CDS DiscoveryResponse; the cluster's settings differ from one version to the next."""
    cluster = {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": PUSHED_CLUSTER,
        "type": "STATIC",
        "connect_timeout": f"{1 + version % 5}s",
        "metadata": {"filter_metadata": {"offwake.demo": {"generation": version}}},
        "load_assignment": {"cluster_name": PUSHED_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": 9080}}}},
        ]}]},
    }
    return {"version_info": str(version), "resources": [cluster]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Envoy keeps its xDS connection open
    server: XdsServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path != CLUSTERS_PATH:
            self.send_error(404)
            return
        body = json.dumps(clusters_response(self.server.next_version())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the demo's logs are for failures."""


class XdsServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The xDS socket; :meth:`start` serves it from a daemon thread."""

    daemon_threads = True

    def __init__(self, path: str, push: bool) -> None:
        if os.path.exists(path):
            os.unlink(path)
        super().__init__(path, _Handler)
        self.push = push
        self.version = 0
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def get_request(self) -> Tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("pilot-agent", 0)  # unix peers have no address; http.server wants one

    def next_version(self) -> int:
        """The version to answer with: a new one for each request when pushing."""
        with self._lock:
            if self.push or self.version == 0:
                self.version += 1
            return self.version

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.2,), daemon=True,
                                        name="xds")
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(2.0)
        self.server_close()
