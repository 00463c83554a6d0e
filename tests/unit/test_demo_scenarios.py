"""The scenario table (``demo/scenarios.py``) and what it turns into: the listing, the
words for each scenario, and the Envoy bootstrap of its settings."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Set

import pytest

from kubectl_offwake.cli.demo import scenario_listing
from kubectl_offwake.demo import envoy_config, loadgen
from kubectl_offwake.demo.scenarios import BY_NAME, DEFAULT, HEALTHY, SCENARIOS
from kubectl_offwake.demo.settings import CpuQuota, Load, LuaStall, MeshSettings, describe
from tests.plugin_cli import plugin_cmd, plugin_env

FINDINGS_SOURCES = Path(__file__).resolve().parents[2] / "kubectl_offwake" / "analysis"
REQUIRED = ("healthy", "cpu-throttled", "noisy-neighbour", "dns-storm", "xds-churn",
            "accept-herd", "slow-upstream", "event-loop-stall", "access-log-contention")


def finding_ids() -> Set[str]:
    """Every finding id the detectors can raise, read from their source."""
    ids: Set[str] = set()
    for path in list(FINDINGS_SOURCES.glob("findings*.py")) + \
            list(FINDINGS_SOURCES.glob("findings/*.py")):
        ids |= set(re.findall(r'\bid="([a-z-]+)"', path.read_text()))
    return ids


def test_the_table_has_every_required_scenario_once_and_the_default():
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    assert set(REQUIRED) <= set(names)
    assert DEFAULT in BY_NAME and BY_NAME[DEFAULT].settings == MeshSettings()


def test_expected_findings_are_findings_the_report_knows():
    known = finding_ids()
    assert "cpu-throttling" in known  # the reading of the source works
    for s in SCENARIOS:
        assert set(s.expected) <= known, (s.name, set(s.expected) - known)


def test_healthy_expects_nothing_and_each_fault_changes_something():
    assert BY_NAME["healthy"].expected == ()
    assert BY_NAME["healthy"].settings == HEALTHY
    for s in SCENARIOS:
        if s.name != "healthy":
            assert s.sets_up(), f"{s.name} sets up nothing beyond healthy"
            assert s.settings != HEALTHY


def test_healthy_is_quiet():
    h = HEALTHY
    assert h.hog_nice is None and h.cpu_quota is None and not h.xds_push
    assert h.dns_refresh_ms >= 5000 and h.reuse_port and h.lua_stall is None
    assert h.upstream_delay_ms == 0


def test_herd_and_its_control_differ_only_in_the_listener():
    herd, churn = BY_NAME["accept-herd"].settings, BY_NAME["connection-churn"].settings
    assert not herd.reuse_port and churn.reuse_port
    assert replace(herd, reuse_port=True) == churn
    assert herd.load.new_connection


def test_words_come_from_the_settings():
    s = replace(HEALTHY, cpu_quota=CpuQuota(quota_us=2_000), dns_refresh_ms=20)
    assert describe(s, HEALTHY) == [
        "DNS refresh every 20 ms",
        "Envoy's cgroup limited to 2 ms of CPU per 100 ms (2% of one CPU)",
    ]
    assert "no CPU hog" in describe(HEALTHY)
    assert len(describe(HEALTHY)) == len(describe(MeshSettings()))


def test_listing_names_every_scenario_and_its_expected_findings():
    lines = scenario_listing().splitlines()
    assert len(lines) == 3 * len(SCENARIOS)
    for s, (head, sets_up, expected) in zip(SCENARIOS, zip(*[iter(lines)] * 3)):
        default = " (default)" if s.name == DEFAULT else ""
        assert head == f"{s.name}{default}: {s.summary}"
        assert sets_up == f"    sets up: {'; '.join(s.sets_up())}"
        assert expected == f"    expected findings: {', '.join(s.expected) or 'none'}"


def test_cli_lists_scenarios_without_root():
    proc = subprocess.run(plugin_cmd("demo", "--list-scenarios"), capture_output=True,
                          text=True, env=plugin_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == scenario_listing()


def _config(settings: MeshSettings) -> dict:
    return envoy_config.EnvoyConfig(
        admin_socket="/run/a.sock", access_log="/tmp/access.log", dns_ip="127.0.0.53",
        xds_socket="/run/xds.sock", xds_refresh_ms=settings.xds_refresh_ms,
        reuse_port=settings.reuse_port, lua_stall=settings.lua_stall,
        access_logging=settings.access_log).bootstrap()


def _inbound(config: dict) -> dict:
    return next(lst for lst in config["static_resources"]["listeners"]
                if lst["name"] == "inbound")


def _hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_bootstrap_of_a_shared_listener():
    assert "enable_reuse_port" not in _inbound(_config(HEALTHY))
    assert _inbound(_config(BY_NAME["accept-herd"].settings))["enable_reuse_port"] is False


def test_bootstrap_spins_in_lua_every_nth_second():
    hcm = _hcm(_inbound(_config(replace(HEALTHY, lua_stall=LuaStall(every_s=7, spin_ms=300)))))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.lua", "envoy.filters.http.router"]
    code = hcm["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    assert "now % 7 == 0" in code and "os.clock() + 0.3" in code
    assert [f["name"] for f in _hcm(_inbound(_config(HEALTHY)))["http_filters"]] == [
        "envoy.filters.http.router"]


def test_bootstrap_takes_clusters_from_the_agents_xds_socket():
    config = _config(HEALTHY)
    cds = config["dynamic_resources"]["cds_config"]["api_config_source"]
    assert cds["api_type"] == "REST" and cds["refresh_delay"] == "10s"
    [xds] = [c for c in config["static_resources"]["clusters"]
             if c["name"] == envoy_config.XDS_CLUSTER]
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["pipe"]["path"] == "/run/xds.sock"
    no_xds = envoy_config.EnvoyConfig(admin_socket="/a", access_log="/b", dns_ip="1.2.3.4")
    assert "dynamic_resources" not in no_xds.bootstrap()


def test_bootstrap_of_heavy_access_logging():
    settings = BY_NAME["access-log-contention"].settings
    logs = _hcm(_inbound(_config(settings)))["access_log"]
    assert len(logs) == settings.access_log.loggers > 1
    fmt = logs[0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    assert f"%REQ({envoy_config.PAD_HEADER.upper()})%" in fmt


@pytest.mark.parametrize("load,extra", [
    (Load(connections=3, delay_ms=10), []),
    (Load(new_connection=True), ["-H", "Connection: close"]),
    (Load(header_bytes=4), ["-H", f"{envoy_config.PAD_HEADER}: xxxx"]),
])
def test_wrk_command(load: Load, extra: list):
    argv = loadgen.command("wrk", "http://x/", "pace.lua", 7.5, load)
    assert argv[:6] == ["wrk", "-t1", f"-c{load.connections}", "-d7s", "-s", "pace.lua"]
    assert argv[6:-1] == extra and argv[-1] == "http://x/"


def test_xds_answers_push_a_new_version_or_repeat_one():
    from kubectl_offwake.demo.xds import PUSHED_CLUSTER, clusters_response

    one, two = clusters_response(1), clusters_response(2)
    assert one["version_info"] == "1" and two["version_info"] == "2"
    assert one["resources"][0]["name"] == two["resources"][0]["name"] == PUSHED_CLUSTER
    assert one["resources"][0] != two["resources"][0]  # a push modifies the cluster


def test_cpu_limit_uses_v2_only_where_it_offers_cpu(tmp_path):
    """This machine's v2 tree has no cpu controller (it is bound to v1): the demo then
    writes the v1 quota; where v2 offers cpu it writes ``cpu.max``."""
    from kubectl_offwake.demo.cpulimit import CpuController, CpuLimitGroup, find_cpu_controller

    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("hugetlb\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert find_cpu_controller(str(v2), str(mountinfo)) == CpuController("/sys/fs/cgroup/cpu", 1)
    (v2 / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert find_cpu_controller(str(v2), str(mountinfo)) == CpuController(str(v2), 2)

    (v2 / "cgroup.subtree_control").write_text("")
    group = CpuLimitGroup("offwake-demo-1", CpuController(str(v2), 2))
    quota_file = group.create(2_000, 100_000)
    assert quota_file == str(v2 / "offwake-demo-1-envoy" / "cpu.max")
    assert (v2 / "offwake-demo-1-envoy" / "cpu.max").read_text() == "2000 100000\n"
    assert (v2 / "cgroup.subtree_control").read_text() == "+cpu\n"
    v1 = tmp_path / "cpu"
    v1.mkdir()
    group = CpuLimitGroup("offwake-demo-1", CpuController(str(v1), 1))
    assert group.create(2_000, 50_000) == str(v1 / "offwake-demo-1-envoy" / "cpu.cfs_quota_us")
    assert (v1 / "offwake-demo-1-envoy" / "cpu.cfs_period_us").read_text() == "50000\n"
    assert (v1 / "offwake-demo-1-envoy" / "cpu.cfs_quota_us").read_text() == "2000\n"
