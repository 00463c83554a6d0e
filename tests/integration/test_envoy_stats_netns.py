"""Envoy's admin counters read the way a pod's are: over loopback *inside* Envoy's network
namespace, from a collector that stays in the host's.

A real Envoy runs in a network namespace of the test's own, its admin on a loopback
address nothing on the host listens on; the collector's reader finds the address (from
the JSON bootstrap, or Istio's 127.0.0.1:15000 when the bootstrap is YAML), joins the
namespace in a short-lived thread, and reads the counters before and after some traffic.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from kubectl_offwake.collector.envoy_stats import EnvoyStatsReader
from kubectl_offwake.collector.targets import Target
from kubectl_offwake.demo.binaries import find_envoy
from kubectl_offwake.demo.envoy_config import to_yaml

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

LISTENER_PORT = 18080


def bootstrap(admin_port: int) -> dict:
    direct = {"match": {"prefix": "/"},
              "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "probe",
        "route_config": {"virtual_hosts": [{"name": "x", "domains": ["*"], "routes": [direct]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "probe",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": LISTENER_PORT}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network."
                                                    "http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"offwake-stats-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def start_envoy(netns: str, config: Path, base_id: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, find_envoy(), "-c", str(config), "--concurrency", "2",
         "--disable-hot-restart", "--base-id", str(base_id), "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc


def wait_listening(netns: str, port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"envoy is not listening on {port} in {netns}")


def connect_in(netns: str, count: int) -> None:
    """``count`` requests on new connections to Envoy's listener, from inside the netns."""
    script = (
        "import socket\n"
        f"for _ in range({count}):\n"
        f"    s = socket.create_connection(('127.0.0.1', {LISTENER_PORT}))\n"
        "    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "    while b'ok' not in s.recv(4096): pass\n"
        "    s.close()\n"
    )
    subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", script], check=True,
                   timeout=60)


def host_listens(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def read_around_traffic(netns: str, pid: int) -> Tuple[List[dict], List[Tuple[str, str]]]:
    records: List[dict] = []
    logs: List[Tuple[str, str]] = []
    reader = EnvoyStatsReader.read_start([Target(pid=pid, comm="envoy", by="pid")],
                                         lambda level, msg: logs.append((level, msg)))
    connect_in(netns, 7)
    reader.finish(lambda record: records.append(dict(record)))
    return records, logs


@pytest.mark.parametrize("how", ["json-bootstrap", "istio-default"])
def test_counters_read_inside_the_pods_network_namespace(netns: str, tmp_path: Path,
                                                         how: str) -> None:
    if how == "json-bootstrap":
        admin_port, config = 19876, tmp_path / "envoy.json"
        config.write_text(json.dumps(bootstrap(admin_port)))
    else:  # a YAML bootstrap says nothing the collector reads: Istio's address is tried
        admin_port, config = 15000, tmp_path / "envoy.yaml"
        config.write_text(to_yaml(bootstrap(admin_port)))
    assert not host_listens(admin_port), f"something on the host holds {admin_port}"
    envoy = start_envoy(netns, config, base_id=os.getpid() % 10000 + 30000)
    try:
        wait_listening(netns, LISTENER_PORT, envoy)
        wait_listening(netns, admin_port, envoy)
        threads_before = threading.active_count()
        my_netns = os.stat("/proc/thread-self/ns/net").st_ino
        records, logs = read_around_traffic(netns, envoy.pid)
    finally:
        envoy.terminate()
        envoy.wait(30)
    assert logs == []
    [record] = records
    assert record["admin"] == f"127.0.0.1:{admin_port}"
    delta = record["delta"]
    assert delta[f"listener.0.0.0.0_{LISTENER_PORT}.downstream_cx_total"] == 7
    assert delta["http.probe.downstream_rq_total"] == 7
    assert record["listeners"][f"0.0.0.0:{LISTENER_PORT}"] == 2  # a socket per worker
    # the reads left no thread behind, and this thread is still in the host's namespace
    assert threading.active_count() == threads_before
    assert os.stat("/proc/thread-self/ns/net").st_ino == my_netns


def test_an_envoy_without_a_reachable_admin_is_a_log_line_not_a_failure(
        netns: str, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(to_yaml({k: v for k, v in bootstrap(0).items() if k != "admin"}))
    envoy = start_envoy(netns, config, base_id=os.getpid() % 10000 + 40000)
    try:
        wait_listening(netns, LISTENER_PORT, envoy)
        records, logs = read_around_traffic(netns, envoy.pid)
    finally:
        envoy.terminate()
        envoy.wait(30)
    assert [r["listeners"] for r in records] == [{f"0.0.0.0:{LISTENER_PORT}": 2}]
    assert "admin" not in records[0]
    assert [level for level, _ in logs] == ["info"]
    assert "no admin address found" in logs[0][1]
