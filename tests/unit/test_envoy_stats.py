"""Envoy's admin counters in the collector: parsing, where the admin is, and the record.

A fake ``/proc`` tree stands for a pod's Envoy (its command line, bootstrap, open sockets
and network tables); a real HTTP server on loopback stands for its admin, so the whole
path from finding the address to the ``envoy_stats`` record runs without root.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.collector import envoy_stats, listeners
from kubectl_offwake.collector.envoy_stats import AdminAddress, EnvoyStatsReader
from kubectl_offwake.collector.targets import Target
from kubectl_offwake.importers.builder import RecordingBuilder
from kubectl_offwake.render.json_report import report_dict

STATS = """\
cluster.upstream.update_attempt: 51
cluster.upstream.update_success: 51
cluster.upstream.upstream_cx_active: 2
cluster_manager.cds.update_success: 7
cluster_manager.active_clusters: 3
http.inbound_http.downstream_cx_total: 300
http.inbound_http.downstream_rq_time: P0(nan,1) P25(nan,1.05)
listener.0.0.0.0_15006.downstream_cx_total: 295
listener.0.0.0.0_15006.worker_0.downstream_cx_total: 150
listener.admin.main_thread.downstream_cx_total: 4
server.worker_1.watchdog_miss: 1
server.worker_1.watchdog_mega_miss: 0
workers.watchdog_miss: 1
runtime.load_success: 5
filesystem.write_buffered: 900
server.uptime: 12
"""


def test_parse_keeps_the_counter_families_and_drops_the_rest():
    got = envoy_stats.parse_counters(STATS)
    assert got == {
        "cluster.upstream.update_attempt": 51,
        "cluster.upstream.update_success": 51,
        "cluster_manager.cds.update_success": 7,
        "http.inbound_http.downstream_cx_total": 300,
        "listener.0.0.0.0_15006.downstream_cx_total": 295,
        "listener.0.0.0.0_15006.worker_0.downstream_cx_total": 150,
        "listener.admin.main_thread.downstream_cx_total": 4,
        "server.worker_1.watchdog_miss": 1,
        "server.worker_1.watchdog_mega_miss": 0,
        "workers.watchdog_miss": 1,
        "runtime.load_success": 5,
        "filesystem.write_buffered": 900,
    }
    # gauges, histograms and other families stay out
    assert "cluster.upstream.upstream_cx_active" not in got
    assert "cluster_manager.active_clusters" not in got


def test_deltas_keep_what_rose_and_count_new_counters_from_zero():
    start = {"a": 5, "b": 7, "c": 9}
    end = {"a": 8, "b": 7, "c": 3, "d": 2}
    assert envoy_stats.deltas(start, end) == {"a": 3, "d": 2}


def test_the_filter_sent_to_envoy_is_the_pattern_used_here():
    query = envoy_stats.STATS_PATH.split("filter=", 1)[1]
    from urllib.parse import unquote

    assert unquote(query) == envoy_stats.PATTERN
    assert "usedonly" in envoy_stats.STATS_PATH and "type=Counters" in envoy_stats.STATS_PATH


@pytest.mark.parametrize("hex_address,expected", [
    ("0100007F:3A98", "127.0.0.1:15000"),
    ("00000000:3AA6", "0.0.0.0:15014"),
    ("00000000000000000000000001000000:3A98", "[::1]:15000"),
    ("00000000000000000000000000000000:1F90", "[::]:8080"),
    ("zz:1", None),
    ("0100:1", None),
])
def test_kernel_addresses(hex_address: str, expected: Optional[str]):
    assert listeners.decode_address(hex_address) == expected


TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
              "   uid  timeout inode\n")


def tcp_line(n: int, local: str, state: str, inode: int) -> str:
    return (f"  {n}: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000"
            f"     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"


def unix_line(inode: int, flags: str, path: str = "") -> str:
    return f"0000000000000000: 00000002 00000000 {flags} 0001 01 {inode} {path}\n"


def test_listening_tables():
    tcp = TCP_HEADER + tcp_line(0, "0100007F:3A98", "0A", 11) + \
        tcp_line(1, "0100007F:3A98", "01", 12) + tcp_line(2, "00000000:3AA6", "0A", 0)
    assert listeners.parse_tcp_listeners(tcp) == {11: "127.0.0.1:15000"}
    unix = UNIX_HEADER + unix_line(21, "00010000", "/run/admin.sock") + \
        unix_line(22, "00000000", "/run/other.sock") + unix_line(23, "00010000", "@abstract")
    assert listeners.parse_unix_listeners(unix) == {21: "/run/admin.sock", 23: "@abstract"}


@pytest.mark.parametrize("argv,path", [
    (["envoy", "-c", "etc/istio/proxy/envoy-rev.json", "--drain-time-s", "45"],
     "etc/istio/proxy/envoy-rev.json"),
    (["envoy", "--config-path", "/e.json"], "/e.json"),
    (["envoy", "--config-path=/e.json"], "/e.json"),
    (["envoy", "--config-yaml", "{}"], None),
    (["envoy", "-c"], None),
])
def test_config_path(argv: List[str], path: Optional[str]):
    assert envoy_stats.config_path(argv) == path


@pytest.mark.parametrize("bootstrap,admin", [
    ({"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}}},
     AdminAddress("127.0.0.1", 15000)),
    ({"admin": {"address": {"pipe": {"path": "/run/admin.sock", "mode": 384}}}},
     AdminAddress(path="/run/admin.sock")),
    ({"admin": {"address": {"socket_address": {"address": "::1", "port_value": "9901"}}}},
     AdminAddress("::1", 9901)),
    ({"admin": {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 0}}}}, None),
    ({"admin": {}}, None),
    ({}, None),
    ([], None),
])
def test_admin_of_bootstrap(bootstrap: object, admin: Optional[AdminAddress]):
    assert envoy_stats.admin_of_bootstrap(bootstrap) == admin


# -- a fake /proc for one Envoy -----------------------------------------------------------------

PID = 4242


def fake_proc(tmp_path: Path, *, argv: List[str], files: Dict[str, str],
              tcp: List[Tuple[str, int]], unix: List[Tuple[str, int]],
              own: List[int]) -> str:
    """``/proc/PID`` with a cmdline, cwd ``/``, a root holding ``files``, listening sockets
    ``tcp`` (hex address, inode) and ``unix`` (path, inode), and fds onto ``own`` inodes."""
    proc = tmp_path / "proc"
    base = proc / str(PID)
    (base / "net").mkdir(parents=True)
    (base / "fd").mkdir()
    (base / "ns").mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (base / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    os.symlink("/", base / "cwd")
    os.symlink(root, base / "root")
    for name, text in files.items():
        target = root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (base / "net" / "tcp").write_text(
        TCP_HEADER + "".join(tcp_line(i, a, "0A", n) for i, (a, n) in enumerate(tcp)))
    (base / "net" / "tcp6").write_text(TCP_HEADER)
    (base / "net" / "unix").write_text(
        UNIX_HEADER + "".join(unix_line(n, "00010000", p) for p, n in unix))
    for fd, inode in enumerate(own):
        os.symlink(f"socket:[{inode}]", base / "fd" / str(fd + 3))
    # the same network namespace as this test, so nothing needs setns
    os.symlink("/proc/self/ns/net", base / "ns" / "net")
    (proc / "self").symlink_to("/proc/self")
    return str(proc)


def hex_of(host: str, port: int) -> str:
    raw = bytes(int(x) for x in host.split("."))[::-1]
    return f"{raw.hex().upper()}:{port:04X}"


def test_admin_from_a_json_bootstrap_relative_to_envoys_cwd(tmp_path):
    boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19000}}}}
    proc = fake_proc(tmp_path, argv=["envoy", "-c", "etc/istio/proxy/envoy-rev.json"],
                     files={"etc/istio/proxy/envoy-rev.json": json.dumps(boot)},
                     tcp=[(hex_of("127.0.0.1", 19000), 31), (hex_of("127.0.0.1", 15021), 32),
                          (hex_of("0.0.0.0", 15006), 33), (hex_of("0.0.0.0", 15006), 34)],
                     unix=[], own=[31, 32, 33, 34])
    assert envoy_stats.find_admin(PID, proc) == AdminAddress("127.0.0.1", 19000)
    assert listeners.listening(PID, proc).counts() == {
        "0.0.0.0:15006": 2, "127.0.0.1:15021": 1,
        "127.0.0.1:19000": 1}


def test_admin_never_an_address_envoy_does_not_listen_on(tmp_path):
    """A bootstrap naming a port someone else holds is not followed; Istio's default is
    used only when Envoy holds it; a YAML bootstrap is not read."""
    boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19000}}}}
    proc = fake_proc(tmp_path, argv=["envoy", "-c", "/b.json"],
                     files={"/b.json": json.dumps(boot)},
                     tcp=[(hex_of("127.0.0.1", 19000), 31), (hex_of("127.0.0.1", 15000), 32),
                          (hex_of("0.0.0.0", 15006), 33)],
                     unix=[], own=[32, 33])  # 19000 is another program's socket
    assert envoy_stats.find_admin(PID, proc) == AdminAddress("127.0.0.1", 15000)


def test_admin_on_a_unix_socket_found_by_listening_sockets(tmp_path):
    proc = fake_proc(tmp_path, argv=["envoy", "-c", "/etc/envoy.yaml"],
                     files={"/etc/envoy.yaml": "admin:\n  address: {}\n"},
                     tcp=[(hex_of("0.0.0.0", 15006), 33)],
                     unix=[("/var/run/admin.sock", 41), ("/var/run/theirs.sock", 42)],
                     own=[33, 41])
    assert envoy_stats.find_admin(PID, proc) == AdminAddress(path="/var/run/admin.sock")


def test_no_admin_when_nothing_says_which_socket_it_is(tmp_path):
    proc = fake_proc(tmp_path, argv=["envoy"], files={},
                     tcp=[(hex_of("127.0.0.1", 7000), 31), (hex_of("127.0.0.1", 7001), 32),
                          (hex_of("0.0.0.0", 15006), 33)],
                     unix=[], own=[31, 32, 33])
    assert envoy_stats.find_admin(PID, proc) is None


class _Admin(http.server.BaseHTTPRequestHandler):
    answers: List[str] = []
    paths: List[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).paths.append(self.path)
        body = type(self).answers.pop(0).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Admin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_reader(proc: str) -> Tuple[List[dict], List[Tuple[str, str]]]:
    records: List[dict] = []
    logs: List[Tuple[str, str]] = []
    target = Target(pid=PID, comm="envoy", by="pid", place={"exe": "/usr/local/bin/envoy"})
    reader = EnvoyStatsReader.read_start([target], lambda lvl, msg: logs.append((lvl, msg)),
                                         proc)
    reader.finish(lambda record: records.append(dict(record)))
    return records, logs


def test_reader_writes_the_rise_of_each_counter_and_the_listeners(tmp_path, admin_server):
    port = admin_server.server_address[1]
    boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    proc = fake_proc(tmp_path, argv=["envoy", "-c", "/b.json"], files={"/b.json": json.dumps(boot)},
                     tcp=[(hex_of("127.0.0.1", port), 31), (hex_of("0.0.0.0", 15006), 33),
                          (hex_of("0.0.0.0", 15006), 34)],
                     unix=[], own=[31, 33, 34])
    _Admin.paths = []
    _Admin.answers = [
        "listener.0.0.0.0_15006.downstream_cx_total: 10\nworkers.watchdog_miss: 0\n",
        "listener.0.0.0.0_15006.downstream_cx_total: 25\nworkers.watchdog_miss: 0\n"
        "cluster.upstream.update_attempt: 4\n",
    ]
    records, logs = run_reader(proc)
    assert logs == []
    assert len(_Admin.paths) == 2 and all(p == envoy_stats.STATS_PATH for p in _Admin.paths)
    [record] = records
    assert record["type"] == "envoy_stats" and record["pid"] == PID
    assert record["admin"] == f"127.0.0.1:{port}"
    assert record["delta"] == {"listener.0.0.0.0_15006.downstream_cx_total": 15,
                               "cluster.upstream.update_attempt": 4}
    assert record["listeners"] == {"0.0.0.0:15006": 2, f"127.0.0.1:{port}": 1}
    assert record["window_s"] >= 0

    # the record travels: recording model, then the JSON report
    builder = RecordingBuilder()
    builder.add({"type": "hello", "schema": 1})
    builder.add(record)
    stats = builder.finish().envoy_stats
    assert [(s.pid, s.admin, s.delta, s.listeners) for s in stats] == [
        (PID, record["admin"], record["delta"], record["listeners"])]
    doc = report_dict(analyze(builder.recording))
    beside = [{"what": "connections accepted", "envoy": 15,
               "counters": "listener.*.downstream_cx_total",
               "trace": "accept wakeups of workers", "trace_value": 0, "trace_unit": "wakeups"},
              {"what": "DNS resolutions", "envoy": 4, "counters": "cluster.*.update_attempt",
               "trace": "UDP wakeups of the main thread", "trace_value": 0,
               "trace_unit": "wakeups"}]
    assert doc["envoy_stats"] == [{"pid": PID, "admin": record["admin"],
                                   "window_s": record["window_s"],
                                   "delta": dict(sorted(record["delta"].items())),
                                   "listeners": record["listeners"],
                                   "beside_wakeups": beside}]


def test_unreachable_admin_is_a_log_record_and_the_listeners_still_come(tmp_path):
    boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}
    proc = fake_proc(tmp_path, argv=["envoy", "-c", "/b.json"], files={"/b.json": json.dumps(boot)},
                     tcp=[(hex_of("127.0.0.1", 9), 31)], unix=[], own=[31])
    records, logs = run_reader(proc)  # nothing listens on port 9 of this host
    assert [r.get("admin") for r in records] == [None]
    assert records[0]["listeners"] == {"127.0.0.1:9": 1} and "delta" not in records[0]
    assert len(logs) == 1 and logs[0][0] == "warning"
    assert "127.0.0.1:9" in logs[0][1] and "at the start" in logs[0][1]


def test_not_envoy_is_not_asked(tmp_path):
    proc = fake_proc(tmp_path, argv=["app"], files={}, tcp=[], unix=[], own=[])
    logs: List[Tuple[str, str]] = []
    reader = EnvoyStatsReader.read_start([Target(pid=PID, comm="app", by="pid")],
                                         lambda lvl, msg: logs.append((lvl, msg)), proc)
    records: List[dict] = []
    reader.finish(lambda record: records.append(dict(record)))
    assert records == [] and logs == []


def test_malformed_record_is_skipped_not_fatal():
    builder = RecordingBuilder()
    builder.add({"type": "envoy_stats", "pid": 1, "delta": {"a": "many"}})
    builder.add({"type": "envoy_stats", "pid": 2, "delta": {"a": 3}, "listeners": {}})
    assert [s.pid for s in builder.recording.envoy_stats] == [2]
    assert builder.malformed == 1


def test_paths_inside_a_containers_root_follow_its_own_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "run" / "istio").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "etc").mkdir()
    os.symlink("/run", root / "var" / "run")  # absolute: must stay inside root
    os.symlink("../run/istio", root / "etc" / "istio")  # relative
    os.symlink("loop", root / "loop")
    base = str(root)
    assert envoy_stats.in_root(base, "/var/run/istio/admin.sock") == \
        f"{base}/run/istio/admin.sock"
    assert envoy_stats.in_root(base, "/etc/istio/./x/../admin.sock") == \
        f"{base}/run/istio/admin.sock"
    assert envoy_stats.in_root(base, "/../../var/run") == f"{base}/run"
    assert envoy_stats.in_root(base, "/no/such/file") == f"{base}/no/such/file"
    with pytest.raises(OSError):
        envoy_stats.in_root(base, "/loop/x")


def test_admin_socket_behind_var_run_is_found_and_dialled_inside_the_root(tmp_path):
    """Debian's /var/run is a link to /run: the socket is dialled in the container's /run."""
    import socket as socketlib

    proc = fake_proc(tmp_path, argv=["envoy"], files={"/run/envoy/.keep": ""},
                     tcp=[(hex_of("0.0.0.0", 15006), 33)],
                     unix=[("/var/run/envoy/admin.sock", 41)], own=[33, 41])
    (tmp_path / "root" / "var").mkdir()
    os.symlink("/run", tmp_path / "root" / "var" / "run")
    admin = envoy_stats.find_admin(PID, proc)
    assert admin == AdminAddress(path="/var/run/envoy/admin.sock")
    server = socketlib.socket(socketlib.AF_UNIX)
    server.bind(str(tmp_path / "root" / "run" / "envoy" / "admin.sock"))
    server.listen(1)
    served = threading.Thread(target=lambda: _answer_once(server, "workers.watchdog_miss: 2\n"))
    served.start()
    try:
        assert envoy_stats.fetch_counters(PID, admin, 2.0, proc) == {"workers.watchdog_miss": 2}
    finally:
        served.join(5)
        server.close()


def _answer_once(server, body: str) -> None:
    conn, _ = server.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        data = body.encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
