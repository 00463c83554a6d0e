"""``kubectl offwake demo --scenario NAME``: each scenario's condition is really there.

One test per scenario of the table (``demo/scenarios.py``; the mixed default has
``test_demo_envoy.py``). Each runs the real command for a short trace and checks the
condition's own evidence, not the findings: while the demo runs, what the kernel shows
(the quota written on Envoy's cgroup, listening sockets counted by ``ss``, the hog on
Envoy's CPU, a slow answer through Envoy); afterwards, what Envoy counted itself
(``envoy_stats``) and the cgroup's throttling counters. Then nothing may remain.
The findings each scenario raises are printed (``-s``) for the record; which findings each
must raise is asserted by test_scenario_findings.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from kubectl_offwake.demo import envoy_config
from kubectl_offwake.demo.binaries import find_envoy
from kubectl_offwake.demo.cpulimit import find_cpu_controller
from kubectl_offwake.demo.scenarios import BY_NAME, DEFAULT, SCENARIOS
from tests.integration.demo_helpers import (
    ScenarioRun,
    Steps,
    assert_nothing_left,
    listening_sockets,
    run_demo_cli,
)
from tests.plugin_cli import plugin_cmd, plugin_env

TRACE = "4s"  # the event-loop-stall scenario spins every 3 s


# -- what each scenario's condition looks like while it runs -------------------------------------

def _cgroup_of(pid: int, version: int) -> str:
    """PID's cgroup in the hierarchy of the ``cpu`` controller (v1: the ``cpu`` line)."""
    with open(f"/proc/{pid}/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (version == 1 and "cpu" in controllers.split(",")) or \
                    (version == 2 and controllers == ""):
                return path
    raise AssertionError(f"pid {pid} is in no cpu cgroup")


def _cpus(pid: int) -> str:
    with open(f"/proc/{pid}/status") as handle:
        return next(line.split()[1] for line in handle if line.startswith("Cpus_allowed_list"))


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def see_quota(run: ScenarioRun, steps: Steps) -> None:
    """The quota as the kernel holds it, on the cgroup Envoy is in."""
    controller = find_cpu_controller()
    assert controller is not None
    group = os.path.join(controller.root, _cgroup_of(steps.pid_of("✓ envoy"),
                                                      controller.version).lstrip("/"))
    name = "cpu.max" if controller.version == 2 else "cpu.cfs_quota_us"
    with open(os.path.join(group, name)) as handle:
        run.live["quota"] = handle.read().split()
    run.live["group"] = group


def see_hog(run: ScenarioRun, steps: Steps) -> None:
    envoy, hog = steps.pid_of("✓ envoy"), steps.pid_of("✓ cpu-hog")
    run.live["cpus"] = (_cpus(envoy), _cpus(hog))
    hog_before, envoy_before = _cpu_ticks(hog), _cpu_ticks(envoy)
    time.sleep(1.0)
    run.live["cpu_ticks"] = (_cpu_ticks(hog) - hog_before, _cpu_ticks(envoy) - envoy_before)


def see_sockets(run: ScenarioRun, steps: Steps) -> None:
    run.live["sockets"] = listening_sockets(steps.netns, envoy_config.INBOUND_PORT)


def see_slow_answer(run: ScenarioRun, steps: Steps) -> None:
    """One request through Envoy from the host, timed: the upstream's think time shows."""
    start = time.monotonic()
    with socket.create_connection((steps.node_ip, envoy_config.INBOUND_PORT), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        answer = b""
        while b"hello from the demo app" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    run.live["answer"] = answer.split(b"\r\n", 1)[0]
    run.live["answer_s"] = time.monotonic() - start


LIVE: Dict[str, Callable[[ScenarioRun, Steps], None]] = {
    "cpu-throttled": see_quota,
    "noisy-neighbour": see_hog,
    "accept-herd": see_sockets,
    "connection-churn": see_sockets,
    "healthy": see_sockets,
    "slow-upstream": see_slow_answer,
}


def _run(name: str, workdir: Path) -> Iterator[ScenarioRun]:
    out = workdir / f"{name}.json"
    run = ScenarioRun({}, Steps())
    see = LIVE.get(name)
    done = run_demo_cli(["--scenario", name, "--duration", TRACE, "--format", "json",
                         "--out", str(out)], workdir,
                        on_ready=(lambda steps: see(run, steps)) if see else None)
    assert done.returncode == 0, done.stderr
    run.steps = done.steps
    run.report = json.loads(out.read_text())
    findings = [(f["severity"], f["id"]) for f in run.report["findings"]]
    print(f"\n{name}: findings {findings}; envoy counters {run.report['envoy_stats']}")
    yield run
    envoy_pids = {w["target"]["pid"] for w in run.report["wakeups"]}
    assert_nothing_left(done.pid, done.steps.pids() | envoy_pids)


@pytest.fixture
def scenario_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScenarioRun]:
    yield from _run(request.param, tmp_path)


def scenario(name: str) -> Callable[[Any], Any]:
    """A root test of one scenario: it gets that scenario's finished ``ScenarioRun``."""
    def mark(test: Any) -> Any:
        for decorator in (pytest.mark.parametrize("scenario_run", [name], indirect=True),
                          pytest.mark.root, pytest.mark.slow,
                          pytest.mark.skipif(os.geteuid() != 0, reason="the demo needs root")):
            test = decorator(test)
        return test
    return mark


def test_every_scenario_but_the_default_has_a_test_here() -> None:
    tested = {name for name, obj in globals().items() if name.startswith("test_scenario_")}
    wanted = {f"test_scenario_{s.name.replace('-', '_')}" for s in SCENARIOS
              if s.name != DEFAULT}
    assert wanted == tested


@pytest.mark.parametrize("name", list(BY_NAME))
def test_bootstrap_of_each_scenario_is_valid_envoy_config(name: str, tmp_path: Path) -> None:
    """Envoy itself validates each scenario's bootstrap (``--mode validate``)."""
    settings = BY_NAME[name].settings
    config = envoy_config.EnvoyConfig(
        admin_socket=str(tmp_path / "admin.sock"), access_log=str(tmp_path / "access.log"),
        dns_ip="127.0.0.53", dns_refresh_ms=settings.dns_refresh_ms,
        stats_flush_ms=settings.stats_flush_ms, xds_socket=str(tmp_path / "xds.sock"),
        xds_refresh_ms=settings.xds_refresh_ms, reuse_port=settings.reuse_port,
        lua_stall=settings.lua_stall, access_logging=settings.access_log)
    path = tmp_path / "envoy.json"
    path.write_text(config.to_json())
    proc = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path),
                           "--disable-hot-restart", "--log-level", "error"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@scenario("healthy")
def test_scenario_healthy(scenario_run: ScenarioRun) -> None:
    assert scenario_run.live["sockets"] == 2  # a listening socket per worker
    assert "cpu-hog" not in scenario_run.steps.text
    assert "limited to" not in scenario_run.steps.text
    # no pushes: the clusters are never modified; DNS refreshed every 5 s at most
    assert scenario_run.delta("cluster_manager.cluster_modified") == 0
    assert scenario_run.delta("cluster.upstream.update_attempt") <= 2
    assert all(t["delta"].get("nr_throttled", 0) == 0 for t in scenario_run.report["throttling"])


@scenario("cpu-throttled")
def test_scenario_cpu_throttled(scenario_run: ScenarioRun) -> None:
    live = scenario_run.live
    assert str(live["group"]).endswith("-envoy"), live  # envoy is in the demo's limit group
    assert live["quota"] in (["2000"], ["2000", "100000"]), live  # v1 quota or v2 cpu.max
    [throttling] = scenario_run.report["throttling"]  # that group's cpu.stat, start to end
    assert throttling["delta"]["nr_throttled"] > 0, throttling
    assert throttling["delta"]["throttled_usec"] > 0, throttling


@scenario("noisy-neighbour")
def test_scenario_noisy_neighbour(scenario_run: ScenarioRun) -> None:
    envoy_cpus, hog_cpus = scenario_run.live["cpus"]
    assert envoy_cpus == hog_cpus and "," not in envoy_cpus and "-" not in envoy_cpus
    # over the same second on the same CPU the hog computed far more than Envoy did (a
    # comparison, so a machine busy with other work does not change the verdict)
    hog_ticks, envoy_ticks = scenario_run.live["cpu_ticks"]
    assert hog_ticks > 2 * envoy_ticks, scenario_run.live
    assert "limited to" not in scenario_run.steps.text
    assert all(t["delta"].get("nr_throttled", 0) == 0 for t in scenario_run.report["throttling"])


@scenario("dns-storm")
def test_scenario_dns_storm(scenario_run: ScenarioRun) -> None:
    # Envoy's own count of re-resolutions; configured 50 a second, at least 5
    assert scenario_run.per_s("cluster.upstream.update_attempt") >= 5
    assert scenario_run.per_s("dns.cares.resolve_total") >= 5


@scenario("xds-churn")
def test_scenario_xds_churn(scenario_run: ScenarioRun) -> None:
    # configured 10 pushes a second; each is a CDS update that modifies a cluster
    assert scenario_run.per_s("cluster_manager.cds.update_success") >= 2
    assert scenario_run.per_s("cluster_manager.cluster_modified") >= 2


def accepts_per_connection(run: ScenarioRun, sockets: int) -> float:
    """Checks the inbound listener has ``sockets`` listening sockets (by ``ss`` while it
    ran, and as the collector saw them), then: accept wakeups per connection Envoy counted."""
    assert run.live["sockets"] == sockets
    assert run.stats["listeners"][f"0.0.0.0:{envoy_config.INBOUND_PORT}"] == sockets
    connections = run.delta(f"listener.0.0.0.0_{envoy_config.INBOUND_PORT}.downstream_cx_total")
    assert connections >= 50
    return run.accept_wakeups() / connections


@scenario("accept-herd")
def test_scenario_accept_herd(scenario_run: ScenarioRun) -> None:
    """One socket shared by both workers: each connection wakes both; one accepts."""
    assert accepts_per_connection(scenario_run, sockets=1) >= 1.5


@scenario("connection-churn")
def test_scenario_connection_churn(scenario_run: ScenarioRun) -> None:
    """The herd's control: the same churn on a socket per worker wakes one worker each."""
    assert accepts_per_connection(scenario_run, sockets=2) <= 1.2


@scenario("slow-upstream")
def test_scenario_slow_upstream(scenario_run: ScenarioRun) -> None:
    assert scenario_run.live["answer"] == b"HTTP/1.1 200 OK"
    assert scenario_run.live["answer_s"] >= 0.2  # the upstream thinks 200 ms
    assert scenario_run.delta("cluster.upstream.upstream_rq_total") > 0


@scenario("event-loop-stall")
def test_scenario_event_loop_stall(scenario_run: ScenarioRun) -> None:
    """The Lua filter ran, and Envoy's watchdog saw a worker miss its 200 ms deadline
    (a 450 ms spin: a miss whenever the watchdog checks)."""
    assert scenario_run.delta("http.inbound_http.lua.executions") > 0
    assert scenario_run.delta("workers.watchdog_miss") >= 1


@scenario("access-log-contention")
def test_scenario_access_log_contention(scenario_run: ScenarioRun) -> None:
    requests = scenario_run.delta("http.inbound_http.downstream_rq_total")
    assert requests > 0
    # eight loggers write every request; the flush timer fires every millisecond
    assert scenario_run.delta("filesystem.write_buffered") >= 4 * requests
    assert scenario_run.per_s("filesystem.flushed_by_timer") >= 100
    flush_wakes = sum(w["count"] for w in scenario_run.report["wakeups"]
                      if w["target"]["role"] == "access-log-flush"
                      and w["category"] == "futex-wake")
    assert flush_wakes >= 100


def test_unknown_scenario_is_bad_usage() -> None:
    proc = subprocess.run(plugin_cmd("demo", "--scenario", "no-such"), capture_output=True,
                          text=True, env=plugin_env(), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1
    assert "--list-scenarios" in proc.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
def test_a_killed_demos_cpu_limit_group_is_removed_by_the_next_demo() -> None:
    """A cpu-throttled demo killed with SIGKILL leaves Envoy's limit group behind; the next
    demo's clean-up of stale demos removes it (and leaves a live demo's alone)."""
    from kubectl_offwake.demo.stale import remove_stale

    controller = find_cpu_controller()
    assert controller is not None, "no cgroup cpu controller on this host"
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{pid}"))
    stale = os.path.join(controller.root, f"offwake-demo-{dead}-envoy")
    mine = os.path.join(controller.root, f"offwake-demo-{os.getpid()}-envoy")
    os.mkdir(stale)
    os.mkdir(mine)
    try:
        assert dead in remove_stale(current_pid=0)
        assert not os.path.exists(stale)
        assert os.path.exists(mine)  # this process is alive: not stale
    finally:
        for path in (stale, mine):
            if os.path.exists(path):
                os.rmdir(path)
