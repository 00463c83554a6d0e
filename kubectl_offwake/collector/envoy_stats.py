"""Envoy's own counters around a trace: its admin ``/stats``, read at the start and the end.

The wakeups say what woke Envoy's threads; Envoy's counters say what Envoy did meanwhile:
connections accepted (``listener.*.downstream_cx_total``, also per worker), DNS refreshes
(``cluster.*.update_attempt``), xDS updates (``*.update_success``, ``config_reload``),
watchdog misses. Findings can then rest on both (a herd is more accept wakeups than
connections). Only these families are kept, and only the counters that moved are sent.

Where the admin listens, in this order: the ``admin`` address of the bootstrap Envoy was
started with (``-c FILE``, JSON, as Istio writes it), Istio's ``127.0.0.1:15000``, else the
one loopback TCP or unix listener Envoy has. A candidate counts only if Envoy itself holds
a listening socket there, so the request never reaches another program or a traffic
listener. The GET runs inside Envoy's network namespace: a short-lived thread joins it
(``setns`` changes only the calling thread) and ends with the request. Read-only, stdlib
only, and never fatal: what cannot be read becomes a ``log`` record.
"""

from __future__ import annotations

import ctypes
import errno
import http.client
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence
from urllib.parse import quote

from ..wire.schema import EnvoyStatsRecord, LogLevel
from .listeners import Listening, listening
from .targets import ENVOY_NAMES, Target

PROC = "/proc"
#: Istio's sidecar admin address (pilot-agent's bootstrap puts it there).
ISTIO_ADMIN = ("127.0.0.1", 15000)
#: Seconds for all reads of one phase together; Envoy answers in milliseconds.
TIMEOUT_S = 2.0
#: Bootstrap files larger than this are not Envoy bootstraps we can use.
MAX_BOOTSTRAP_BYTES = 4 << 20
_CLONE_NEWNET = 0x40000000
_UNIX_PATH_MAX = 107

#: The counter families kept (the same text is an RE2 filter for Envoy and a Python regex).
FAMILIES = (
    r"listener\..*downstream_cx_total",
    r"http\..*\.downstream_(cx|rq)_total",
    r"cluster\..*\.(update_(attempt|success|failure|empty|no_rebuild)"
    r"|upstream_(cx|rq)_total|upstream_rq_timeout)",
    r"(cluster|listener)_manager\.(cds\.|lds\.)?(update_(attempt|success|rejected|failure)"
    r"|config_reload|cluster_(added|modified|removed)|listener_(added|modified|removed))",
    r".*\.rds\..*\.(update_(attempt|success|rejected)|config_reload)",
    r"runtime\.load_(success|error)",
    r"(server\.(main_thread|worker_[0-9]+)|workers|main_thread)\.watchdog_(mega_)?miss",
    r"dns\.[a-z_]+\.(resolve_total|not_found|timeouts|get_addr_failure)",
    r"(filesystem|access_log_file)\.(write_buffered|write_completed|write_failed"
    r"|flushed_by_timer|reopen_failed)",
    r".*\.lua\.(executions|errors)",
)
PATTERN = "^(" + "|".join(FAMILIES) + ")$"
_KEEP = re.compile(PATTERN)
STATS_PATH = "/stats?usedonly&type=Counters&filter=" + quote(PATTERN, safe="")


@dataclass(frozen=True)
class AdminAddress:
    """A TCP ``host:port`` or a unix socket path (``@name``: abstract) of Envoy's admin."""

    host: str = ""
    port: int = 0
    path: str = ""

    def describe(self) -> str:
        return f"unix:{self.path}" if self.path else _join(self.host, self.port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_envoy(target: Target) -> bool:
    exe = os.path.basename(target.place.get("exe") or "").removesuffix(" (deleted)")
    return target.comm in ENVOY_NAMES or exe in ENVOY_NAMES


# -- where the admin listens -------------------------------------------------------------------

def config_path(argv: Sequence[str]) -> Optional[str]:
    """The ``-c`` / ``--config-path`` argument of an Envoy command line."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config-path") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config-path="):
            return arg.split("=", 1)[1]
    return None


def admin_of_bootstrap(bootstrap: object) -> Optional[AdminAddress]:
    """``admin.address`` of a parsed bootstrap (``socket_address`` or ``pipe``)."""
    admin = bootstrap.get("admin") if isinstance(bootstrap, dict) else None
    address = admin.get("address") if isinstance(admin, dict) else None
    if not isinstance(address, dict):
        return None
    pipe = address.get("pipe")
    if isinstance(pipe, dict) and isinstance(pipe.get("path"), str) and pipe["path"]:
        return AdminAddress(path=pipe["path"])
    sock = address.get("socket_address")
    if isinstance(sock, dict) and isinstance(sock.get("address"), str):
        try:
            port = int(sock.get("port_value", 0))
        except (TypeError, ValueError):
            return None
        if 0 < port < 65536:
            return AdminAddress(host=sock["address"], port=port)
    return None


def in_root(root: str, path: str, max_links: int = 40) -> str:
    """``path`` as a process whose root directory is ``root`` sees it.

    ``/proc/PID/root`` leads into a container's filesystem, but an absolute symlink met on
    the way (Debian's ``/var/run`` → ``/run``) would lead back into ours; so each link
    is followed here, inside ``root``.
    """
    todo = [p for p in path.split("/") if p]
    done: List[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        try:
            target = os.readlink(os.path.join(root, *done, part))
        except OSError:  # not a link, or not there (the open that follows says so)
            done.append(part)
            continue
        links += 1
        if links > max_links:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p] + todo
    return os.path.join(root, *done)


def _bootstrap_admin(pid: int, proc: str) -> Optional[AdminAddress]:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
        path = config_path(argv)
        if not path:
            return None
        if not path.startswith("/"):
            path = os.path.join(os.readlink(f"{proc}/{pid}/cwd"), path)
        with open(in_root(f"{proc}/{pid}/root", path), "rb") as handle:
            data = handle.read(MAX_BOOTSTRAP_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_BOOTSTRAP_BYTES:
        return None
    try:
        return admin_of_bootstrap(json.loads(data))
    except ValueError:
        return None  # YAML or proto text: only JSON is read here


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _listens(candidate: AdminAddress, found: Listening) -> Optional[AdminAddress]:
    """The candidate as it can be dialled, if Envoy listens there; else ``None``."""
    if candidate.path:
        return candidate if candidate.path in found.unix else None
    host, port = candidate.host, candidate.port
    if _join(host, port) in found.tcp:
        if host == "0.0.0.0":
            return AdminAddress("127.0.0.1", port)
        return AdminAddress("::1", port) if host == "::" else candidate
    if _loopback(host):
        wildcard = "[::]" if ":" in host else "0.0.0.0"
        if f"{wildcard}:{port}" in found.tcp:
            return candidate
    return None


def find_admin(pid: int, proc: str = PROC) -> Optional[AdminAddress]:
    """Envoy's admin address (see the module docstring for the order), or ``None``."""
    found = listening(pid, proc)
    candidates: List[AdminAddress] = []
    boot = _bootstrap_admin(pid, proc)
    if boot is not None:
        candidates.append(boot)
    candidates.append(AdminAddress(*ISTIO_ADMIN))
    loopback_tcp = [a for a in found.tcp if _loopback(a.rsplit(":", 1)[0].strip("[]"))]
    if len(loopback_tcp) == 1:
        host, port = loopback_tcp[0].rsplit(":", 1)
        candidates.append(AdminAddress(host.strip("[]"), int(port)))
    if len(found.unix) == 1:
        candidates.append(AdminAddress(path=next(iter(found.unix))))
    for candidate in candidates:
        usable = _listens(candidate, found)
        if usable is not None:
            return usable
    return None


# -- reading ------------------------------------------------------------------------------------

def parse_counters(text: str) -> Dict[str, int]:
    """``name: value`` lines of Envoy's text ``/stats`` → the kept counters."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        value = value.strip()
        if sep and value.isdigit() and _KEEP.match(name):
            out[name] = int(value)
    return out


def deltas(start: Dict[str, int], end: Dict[str, int]) -> Dict[str, int]:
    """How much each counter rose (a counter first seen at the end started at 0: ``usedonly``
    leaves out counters nothing has touched). Counters that did not rise are left out."""
    out = {}
    for name, value in sorted(end.items()):
        rise = value - start.get(name, 0)
        if rise > 0:
            out[name] = rise
    return out


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix stream socket (Envoy's admin ``pipe`` address; a leading NUL
    names an abstract one). The demo's pilot-agent polls its Envoy through it too."""

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _same_netns(pid: int, proc: str) -> bool:
    try:
        return os.stat(f"{proc}/{pid}/ns/net").st_ino == os.stat(f"{proc}/self/ns/net").st_ino
    except OSError:
        return False


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def enter_netns(pid: int, proc: str = PROC) -> None:
    """Move the calling thread (only it) into PID's network namespace."""
    if _same_netns(pid, proc):
        return
    fd = os.open(f"{proc}/{pid}/ns/net", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def fetch_counters(pid: int, admin: AdminAddress, timeout: float = TIMEOUT_S,
                   proc: str = PROC) -> Dict[str, int]:
    """GET the kept counters; call it from a thread of its own (it may join PID's netns)."""
    conn: http.client.HTTPConnection
    if admin.path and not admin.path.startswith("@"):
        path = in_root(f"{proc}/{pid}/root", admin.path)  # Envoy's filesystem, from ours
        if len(path) > _UNIX_PATH_MAX:
            raise OSError(f"the socket path {path} is too long to connect to")
        conn = UnixHTTPConnection(path, timeout)
    else:
        enter_netns(pid, proc)
        if admin.path:
            conn = UnixHTTPConnection("\0" + admin.path[1:], timeout)
        else:
            conn = http.client.HTTPConnection(admin.host, admin.port, timeout=timeout)
    try:
        conn.request("GET", STATS_PATH, headers={"User-Agent": "kubectl-offwake"})
        response = conn.getresponse()
        body = response.read(16 << 20)
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"HTTP {response.status}")
    return parse_counters(body.decode("utf-8", "replace"))


@dataclass
class _Reading:
    counters: Optional[Dict[str, int]] = None
    error: str = ""
    at: float = 0.0


def _read_all(jobs: Dict[int, AdminAddress], proc: str) -> Dict[int, _Reading]:
    """Read every Envoy at once, each in a thread of its own; give up after TIMEOUT_S."""
    out = {pid: _Reading(error="no answer in time") for pid in jobs}

    def one(pid: int, admin: AdminAddress) -> None:
        try:
            out[pid] = _Reading(fetch_counters(pid, admin, TIMEOUT_S, proc), "",
                                time.monotonic())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            out[pid] = _Reading(error=str(exc) or type(exc).__name__)

    threads = [threading.Thread(target=one, args=job, daemon=True, name="envoy-stats")
               for job in jobs.items()]
    deadline = time.monotonic() + TIMEOUT_S + 0.5
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return out


Log = Callable[[LogLevel, str], None]
Emit = Callable[[EnvoyStatsRecord], None]


class EnvoyStatsReader:
    """Envoy counters of the traced Envoys: read by :meth:`read_start` before tracing;
    :meth:`finish`, after the last snapshot, writes one ``envoy_stats`` record per Envoy
    (its listening sockets, and the counters' rise when its admin could be read twice)."""

    def __init__(self, targets: Sequence[Target], log: Log, proc: str = PROC) -> None:
        self.proc = proc
        self.log = log
        self.pids = [t.pid for t in targets if is_envoy(t)]
        self.admins: Dict[int, AdminAddress] = {}
        self.started: Dict[int, _Reading] = {}
        for pid in self.pids:
            admin = find_admin(pid, proc)
            if admin is None:
                log("info", f"no admin address found for envoy (pid {pid}): not in its JSON "
                    "bootstrap, not 127.0.0.1:15000, no single loopback listener; the report "
                    "has no Envoy counters for it")
            else:
                self.admins[pid] = admin

    @classmethod
    def read_start(cls, targets: Sequence[Target], log: Log, proc: str = PROC) -> EnvoyStatsReader:
        stats = cls(targets, log, proc)
        stats.started = stats._read(stats.admins, "the start")
        return stats

    def finish(self, emit: Emit) -> None:
        readable = {pid: admin for pid, admin in self.admins.items()
                    if pid in self.started and self.started[pid].counters is not None}
        ended = self._read(readable, "the end")
        for pid in self.pids:
            if not os.path.exists(f"{self.proc}/{pid}"):
                continue
            record: EnvoyStatsRecord = {"type": "envoy_stats", "pid": pid,
                                        "listeners": listening(pid, self.proc).counts()}
            start, end = self.started.get(pid), ended.get(pid)
            if start is not None and end is not None and start.counters is not None \
                    and end.counters is not None:
                record["admin"] = self.admins[pid].describe()
                record["window_s"] = round(end.at - start.at, 3)
                record["delta"] = deltas(start.counters, end.counters)
            emit(record)

    def _read(self, jobs: Dict[int, AdminAddress], when: str) -> Dict[int, _Reading]:
        readings = _read_all(jobs, self.proc)
        for pid, reading in sorted(readings.items()):
            if reading.counters is None:
                self.log("warning", f"could not read envoy's admin /stats at "
                         f"{self.admins[pid].describe()} (pid {pid}) at {when} "
                         f"({reading.error}); the report has no Envoy counters for it")
        return readings
