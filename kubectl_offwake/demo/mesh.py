"""``DemoMesh``: a small mesh node around a real Envoy, set up and torn down as one unit.

    with DemoMesh(on_step=print) as mesh:
        mesh.envoy_pid, mesh.envoy_threads, mesh.node_ip ...

Inside a network namespace of its own: Envoy (child of the pilot-agent stand-in, which
serves it clusters over REST xDS on a unix socket; admin on a unix socket too),
``dnsmasq`` answering the STRICT_DNS cluster Envoy keeps re-resolving, the upstream app,
and ``wrk`` sending rate-limited load through Envoy. On the host side of a veth pair: the
kubelet stand-in probing Envoy's health port over fresh connections, and (in the mixed
demo and ``noisy-neighbour``) a CPU hog pinned to Envoy's CPU. How much of each, and the
faults of the scenarios (a CPU limit, a shared listener, a slow upstream, ...), come from
one ``MeshSettings`` (``settings.py``).

Teardown runs on success, on errors and on Ctrl-C (SIGTERM is turned into the same path):
processes by PID, then whatever is left in the demo's cgroup, then the veth pair, the
namespace and the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set

from ..collector.envoy_stats import UnixHTTPConnection
from ..errors import RunFailed, require_root
from . import envoy_config, loadgen
from .agent import admin_get
from .binaries import DemoBinaries
from .cgroup import DemoCgroup
from .cpulimit import CpuLimitGroup
from .network import NodeNetwork
from .processes import Supervisor, wait_until
from .settings import MeshSettings
from .stale import remove_stale

StepCallback = Callable[[str], None]
#: What the demo does that needs root (said when it is not).
DEMO_NEEDS = "the demo (network namespaces and eBPF)"

DNS_IP = "127.0.0.53"


@dataclass
class MeshInfo:
    """What tests and the demo need to know about the running node."""

    prefix: str
    netns: str
    host_ip: str
    node_ip: str
    cpu: int  # Envoy's and the hog's
    workdir: str
    admin_socket: str
    access_log: str
    pids: Dict[str, int] = field(default_factory=dict)
    envoy_threads: Dict[int, str] = field(default_factory=dict)
    other_cpus: List[int] = field(default_factory=list)  # everything else runs here
    #: The file Envoy's CPU quota was written to, when the settings set one.
    cpu_quota_file: Optional[str] = None

    @property
    def envoy_pid(self) -> int:
        return self.pids["envoy"]

    def tids(self, comm_prefix: str) -> List[int]:
        return sorted(t for t, c in self.envoy_threads.items() if c.startswith(comm_prefix))


def _choose_cpus() -> tuple[int, Optional[Set[int]]]:
    """Envoy's CPU (shared with the hog), and the others for the rest of the demo.

    Keeping the load client, the app and the stand-ins off Envoy's CPU leaves the hog as
    Envoy's one neighbour there; on a single-CPU machine everything shares it.
    """
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1]
    others = set(allowed) - {cpu}
    return cpu, (others or None)


def _thread_names(pid: int) -> Dict[int, str]:
    names: Dict[int, str] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return names
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as handle:
                names[int(tid)] = handle.read().strip()
        except OSError:
            continue
    return names


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


class DemoMesh:
    """Context manager for the demo node (see the module docstring)."""

    def __init__(self, on_step: Optional[StepCallback] = None, load_seconds: float = 60.0,
                 prefix: Optional[str] = None, settings: Optional[MeshSettings] = None,
                 binaries: Optional[DemoBinaries] = None) -> None:
        self.prefix = prefix or f"offwake-demo-{os.getpid()}"
        self.on_step = on_step or (lambda _text: None)
        self.load_seconds = load_seconds
        self.settings = settings or MeshSettings()
        self._binaries = binaries
        self.info: Optional[MeshInfo] = None
        self.workdir: Optional[str] = None
        self.cgroup: Optional[DemoCgroup] = None
        self.cpu_limit: Optional[CpuLimitGroup] = None
        self.network: Optional[NodeNetwork] = None
        self.supervisor: Optional[Supervisor] = None
        self._old_sigterm: object = None
        self._others: Optional[Set[int]] = None
        self.cleanup_problems: List[str] = []

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> MeshInfo:
        self._catch_sigterm()
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _catch_sigterm(self) -> None:
        """SIGTERM takes the same path as Ctrl-C, so a killed demo still cleans up."""
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)

    def start(self) -> MeshInfo:
        """Set the node up step by step, reporting each finished step to ``on_step``."""
        require_root(DEMO_NEEDS)
        binaries = self._binaries or DemoBinaries.find()
        for pid in remove_stale(os.getpid()):
            self.on_step(f"removed what a killed demo (pid {pid}) had left behind")
        info = self._make_node()
        self._start_dns(info, binaries)
        self._start_upstream(info)
        self._start_envoy(info, binaries)
        self._limit_cpu(info)
        self._start_neighbours(info, binaries)
        info.envoy_threads = _thread_names(info.envoy_pid)
        return info

    def _make_node(self) -> MeshInfo:
        """Temporary directory, cgroup, namespace and veth pair."""
        self.workdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.cgroup = DemoCgroup(self.prefix)
        self.cgroup.create()
        self.supervisor = Supervisor(self.workdir, self.cgroup)
        self.network = NodeNetwork.plan(self.prefix, os.getpid(), f"owd{os.getpid() % 10**8}")
        net = self.network
        net.create()
        self.on_step(f"network namespace {net.netns}: veth {net.host_if} {net.host_ip} "
                     f"<-> {net.node_ip}")
        cpu, others = _choose_cpus()
        self._others = others
        self.info = MeshInfo(
            prefix=self.prefix, netns=net.netns, host_ip=net.host_ip, node_ip=net.node_ip,
            cpu=cpu, workdir=self.workdir,
            admin_socket=os.path.join(self.workdir, "admin.sock"),
            access_log=os.path.join(self.workdir, "access.log"),
            other_cpus=sorted(others or ()),
        )
        return self.info

    def _start_dns(self, info: MeshInfo, binaries: DemoBinaries) -> None:
        assert self.supervisor is not None and self.network is not None
        dns = self.supervisor.start("dnsmasq", [
            binaries.dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--bind-interfaces", f"--listen-address={DNS_IP}", "--port=53",
            f"--host-record={envoy_config.UPSTREAM_HOST},127.0.0.1", "--local-ttl=1",
            "--pid-file=", "--cache-size=0",
            # Dropping to nobody/dip would clear its parent-death signal.
            "--user=root", "--group=root",
        ], netns_prefix=self.network.exec_prefix(), cpus=self._others)
        info.pids["dnsmasq"] = dns.pid
        self._expect_alive("dnsmasq", 0.3)
        self.on_step(f"dnsmasq answering {envoy_config.UPSTREAM_HOST} on {DNS_IP}:53 "
                     f"(pid {dns.pid})")

    def _start_upstream(self, info: MeshInfo) -> None:
        assert self.supervisor is not None and self.network is not None
        sup = self.supervisor
        delay = self.settings.upstream_delay_ms
        upstream = sup.start("upstream", sup.python_module(
            "upstream", "--port", str(envoy_config.UPSTREAM_PORT), "--delay-ms", str(delay)),
            netns_prefix=self.network.exec_prefix(), cpus=self._others)
        info.pids["upstream"] = upstream.pid
        slow = f", answering after {delay} ms" if delay else ""
        self.on_step(f"upstream app on 127.0.0.1:{envoy_config.UPSTREAM_PORT}{slow} "
                     f"(pid {upstream.pid})")

    def _start_envoy(self, info: MeshInfo, binaries: DemoBinaries) -> None:
        """Envoy, as the child of the pilot-agent stand-in, pinned to the demo's CPU."""
        assert self.supervisor is not None and self.network is not None
        sup = self.supervisor
        settings = self.settings
        xds_socket = os.path.join(info.workdir, "xds.sock")
        config = envoy_config.EnvoyConfig(
            admin_socket=info.admin_socket, access_log=info.access_log, dns_ip=DNS_IP,
            dns_refresh_ms=settings.dns_refresh_ms, stats_flush_ms=settings.stats_flush_ms,
            xds_socket=xds_socket, xds_refresh_ms=settings.xds_refresh_ms,
            reuse_port=settings.reuse_port, lua_stall=settings.lua_stall,
            access_logging=settings.access_log,
        )
        config_path = os.path.join(info.workdir, "envoy.json")
        with open(config_path, "w") as handle:
            handle.write(config.to_json())
        envoy_argv = [
            binaries.envoy, "-c", config_path, "--concurrency", str(settings.concurrency),
            "--disable-hot-restart", "--base-id", str(os.getpid() % 100000 + 100000),
            "--log-level", "warning",
            "--file-flush-interval-msec", str(settings.access_log.flush_ms),
        ]
        agent_args = [
            "--admin-socket", info.admin_socket, "--interval", str(settings.agent_interval_s),
            "--stats-every", str(settings.agent_stats_every), "--xds-socket", xds_socket,
            *(["--xds-push"] if settings.xds_push else []),
            "--cpu", str(info.cpu),
            "--envoy-log", os.path.join(info.workdir, "envoy.log"),
        ]
        agent = sup.start("pilot-agent", sup.python_module("agent", *agent_args, "--",
                                                           *envoy_argv),
                          netns_prefix=self.network.exec_prefix(), cpus=self._others)
        info.pids["pilot-agent"] = agent.pid
        self._wait_envoy_ready(info)
        info.envoy_threads = _thread_names(info.envoy_pid)
        pushes = (f"pushing a cluster change on every poll, every {settings.xds_refresh_ms} ms"
                  if settings.xds_push else
                  f"polled every {settings.xds_refresh_ms} ms, no changes")
        self.on_step(
            f"envoy (pid {info.envoy_pid}, {len(info.envoy_threads)} threads, "
            f"{settings.concurrency} workers, pinned to CPU {info.cpu}) started by the "
            "pilot-agent stand-in "
            f"(pid {agent.pid}): xDS over a unix socket ({pushes}), admin on a unix socket")
        self._wait_upstream_resolved(info)
        self.on_step(f"envoy resolved {envoy_config.UPSTREAM_HOST} through dnsmasq "
                     f"(re-resolving every {settings.dns_refresh_ms} ms)")

    def _limit_cpu(self, info: MeshInfo) -> None:
        """The scenario's CPU limit on Envoy's cgroup, as a container's limit is."""
        quota = self.settings.cpu_quota
        if quota is None:
            return
        self.cpu_limit = CpuLimitGroup(self.prefix)
        info.cpu_quota_file = self.cpu_limit.create(quota.quota_us, quota.period_us)
        self.cpu_limit.add(info.envoy_pid)
        self.on_step(f"envoy limited to {quota.describe()} ({info.cpu_quota_file})")

    def _start_neighbours(self, info: MeshInfo, binaries: DemoBinaries) -> None:
        """The hog on Envoy's CPU, the kubelet stand-in on the host, and the load."""
        assert self.supervisor is not None and self.network is not None
        sup = self.supervisor
        settings = self.settings
        if settings.hog_nice is not None:
            # nice -5 weighs about 3x a default task, like a neighbour pod whose CPU
            # request is three times the sidecar's
            hog = sup.start("cpu-hog", sup.python_module(
                "hog", "--cpu", str(info.cpu), "--nice", str(settings.hog_nice)))
            info.pids["cpu-hog"] = hog.pid
            self.on_step(f"cpu-hog busy on CPU {info.cpu} next to envoy, nice "
                         f"{settings.hog_nice} (pid {hog.pid})")

        prober = sup.start("kubelet", sup.python_module(
            "prober", "--host", info.node_ip, "--port", str(envoy_config.HEALTH_PORT),
            "--interval", str(settings.probe_interval_s)), cpus=self._others)
        info.pids["kubelet"] = prober.pid
        self.on_step(f"kubelet stand-in probing http://{info.node_ip}:"
                     f"{envoy_config.HEALTH_PORT}/healthz/ready from the host every "
                     f"{settings.probe_interval_s:g} s (pid {prober.pid})")

        load = settings.load
        script = loadgen.write_script(info.workdir, load)
        wrk = sup.start("wrk", loadgen.command(
            binaries.wrk, f"http://127.0.0.1:{envoy_config.INBOUND_PORT}/", script,
            self.load_seconds, load), netns_prefix=self.network.exec_prefix(),
            cpus=self._others)
        info.pids["wrk"] = wrk.pid
        self._wait_traffic(info)
        how = ", a new connection per request" if load.new_connection else ""
        conns = f"{load.connections} connection{'s' if load.connections != 1 else ''}"
        self.on_step(f"wrk sending load through envoy (pid {wrk.pid}, {conns} paced to at "
                     f"most {load.approx_rate()} requests/s{how})")

    def stop(self) -> None:
        """Remove everything this mesh created; safe to call more than once."""
        old_int = None
        if threading.current_thread() is threading.main_thread():
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning first
        try:
            self._stop()
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)  # type: ignore[arg-type]
                self._old_sigterm = None

    def _stop(self) -> None:
        problems = self.cleanup_problems
        if self.supervisor is not None:
            self.supervisor.stop_all()
            self.supervisor = None
        if self.cgroup is not None:
            try:
                self.cgroup.kill_and_remove()
            except OSError as exc:
                problems.append(f"cgroup {self.cgroup.path}: {exc.strerror}")
            self.cgroup = None
        if self.cpu_limit is not None:
            problem = self.cpu_limit.remove()
            if problem:
                problems.append(problem)
            self.cpu_limit = None
        if self.network is not None:
            problem = self.network.remove()
            if problem:
                problems.append(problem)
            self.network = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # -- readiness -------------------------------------------------------------------

    def _expect_alive(self, name: str, seconds: float) -> None:
        assert self.supervisor is not None
        time.sleep(seconds)
        if not self.supervisor.alive(name):
            tail = self.supervisor.log_tail(name, 1)
            raise RunFailed(f"{name} exited at start ({tail or 'no output'}); "
                            "see that the demo's tools are installed")

    def _admin(self, info: MeshInfo, path: str) -> tuple[int, bytes]:
        conn = UnixHTTPConnection(info.admin_socket, timeout=1.0)
        try:
            return admin_get(path, conn)
        finally:
            conn.close()

    def _wait_envoy_ready(self, info: MeshInfo) -> None:
        assert self.supervisor is not None
        sup = self.supervisor

        def ready() -> bool:
            if not sup.alive("pilot-agent"):
                raise RunFailed(
                    "envoy exited at start; its log ends with: "
                    f"{_last_line(os.path.join(info.workdir, 'envoy.log'))}"
                )
            kids = _children(info.pids["pilot-agent"])
            if not kids:
                return False
            info.pids["envoy"] = kids[0]
            try:
                status, body = self._admin(info, "/ready")
            except OSError:
                return False
            return status == 200 and body.strip() == b"LIVE"

        if not wait_until(ready, 20.0, 0.1):
            raise RunFailed("envoy did not become ready within 20 s; its log is "
                            f"{os.path.join(info.workdir, 'envoy.log')}")

    def _wait_upstream_resolved(self, info: MeshInfo) -> None:
        def resolved() -> bool:
            try:
                _, body = self._admin(info, "/clusters")
            except OSError:
                return False
            return f"upstream::127.0.0.1:{envoy_config.UPSTREAM_PORT}::".encode() in body

        if not wait_until(resolved, 10.0, 0.1):
            raise RunFailed("envoy could not resolve the upstream through dnsmasq within 10 s")

    def _wait_traffic(self, info: MeshInfo) -> None:
        def flowing() -> bool:
            try:
                _, body = self._admin(info, "/stats?filter=downstream_rq_2xx")
            except OSError:
                return False
            for line in body.decode(errors="replace").splitlines():
                if line.startswith("http.inbound_http.downstream_rq_2xx:"):
                    return int(line.split(":")[1]) > 0
            return False

        if not wait_until(flowing, 10.0, 0.1):
            assert self.supervisor is not None
            tail = self.supervisor.log_tail("wrk", 2)
            raise RunFailed(
                f"no request got through envoy within 10 s ({tail or 'wrk said nothing'})"
            )


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
        return lines[-1] if lines else "(empty)"
    except OSError:
        return "(no log)"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
