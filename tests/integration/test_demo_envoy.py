"""``kubectl offwake demo``: a real Envoy in its own network namespace, traced for real.

The demo's node has known wakers, so the report must name them: the load client (``wrk``)
and the kubelet stand-in waking Envoy's workers over TCP, ``dnsmasq`` waking the main
thread with DNS answers, the pilot-agent stand-in waking it over the admin unix socket,
the main thread waking workers through eventfd, timers, and the CPU hog preempting
Envoy's threads on their shared CPU. Afterwards nothing of the demo may remain: no
process, network namespace, veth, cgroup or temporary directory — also after Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Set, Tuple

import pytest

from kubectl_offwake.demo.mesh import DemoMesh
from tests.integration.demo_helpers import Steps, alive, assert_nothing_left, netns_exists
from tests.plugin_cli import plugin_cmd, plugin_env

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the demo needs root"),
]


@dataclass
class DemoRun:
    cli_pid: int
    returncode: int
    report: dict
    stderr: str
    recording: Path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    workdir = tmp_path_factory.mktemp("h8-demo")
    recording = workdir / "demo.jsonl.gz"
    proc = subprocess.Popen(
        plugin_cmd("demo", "--duration", "5s", "--format", "json",
                   "--keep-recording", str(recording)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plugin_env(), cwd=workdir,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    return DemoRun(proc.pid, proc.returncode, json.loads(stdout), stderr, recording)


def rows(report: dict, *, category: str, target_role: str = "",
         waker_comm: str = "") -> List[dict]:
    out = []
    for w in report["wakeups"]:
        if w["category"] != category:
            continue
        if target_role and w["target"].get("role") != target_role:
            continue
        if waker_comm and (w["waker"] or {}).get("comm") != waker_comm:
            continue
        out.append(w)
    return out


def count(found: List[dict]) -> int:
    return sum(w["count"] for w in found)


def test_demo_shows_progress_and_traces_envoy(demo_run: DemoRun) -> None:
    for step in ("✓ network namespace offwake-demo-", "✓ dnsmasq answering", "✓ envoy (pid",
                 "✓ cpu-hog busy", "✓ kubelet stand-in probing", "✓ wrk sending load",
                 "✓ removed the demo node"):
        assert step in demo_run.stderr, f"missing step {step!r}:\n{demo_run.stderr}"
    source = demo_run.report["source"]
    assert source["end_reason"] == "duration"
    roles = {w["target"]["role"] for w in demo_run.report["wakeups"]}
    assert {"main", "worker"} <= roles


def test_kept_recording_reports_the_same_with_the_stand_ins_named(demo_run: DemoRun) -> None:
    proc = subprocess.run(plugin_cmd("report", str(demo_run.recording), "--format", "json"),
                          capture_output=True, text=True, env=plugin_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["totals"]["wakeups"] == demo_run.report["totals"]["wakeups"]
    names = {(w["waker"] or {}).get("name") for w in again["wakeups"]}
    assert "pilot-agent (demo stand-in)" in names


def test_workers_woken_over_tcp_by_the_load_client(demo_run: DemoRun) -> None:
    found = rows(demo_run.report, category="tcp-receive", target_role="worker", waker_comm="wrk")
    assert count(found) >= 50, count(found)
    assert all(w["cause"] == "waker" for w in found)
    assert all(w["target"]["comm"].startswith("wrk:worker_") for w in found)
    assert any("tcp" in " ".join(w["waker_stack"]) for w in found)


def test_workers_woken_by_kubelet_probes_from_the_host(demo_run: DemoRun) -> None:
    found = [w for w in demo_run.report["wakeups"]
             if (w["waker"] or {}).get("comm") == "kubelet"
             and w["target"]["role"] == "worker"
             and w["category"] in ("tcp-accept", "tcp-receive", "tcp-close")]
    assert count(found) >= 5, count(found)
    assert {w["category"] for w in found} & {"tcp-accept", "tcp-receive"}


def test_main_thread_woken_by_dnsmasq_answers(demo_run: DemoRun) -> None:
    found = rows(demo_run.report, category="udp-receive", target_role="main",
                 waker_comm="dnsmasq")
    # Envoy re-resolves every 100 ms: about 50 answers in 5 s on an idle machine.
    assert count(found) >= 10, count(found)
    assert all(w["cause"] == "waker" for w in found)
    assert all(w["target"]["comm"] == "envoy" for w in found)


def test_main_thread_woken_over_unix_socket_by_pilot_agent(demo_run: DemoRun) -> None:
    found = rows(demo_run.report, category="unix-socket", target_role="main",
                 waker_comm="pilot-agent")
    assert count(found) >= 10, count(found)
    assert all(w["cause"] == "waker" for w in found)
    assert all("pilot-agent" in w["waker"]["name"] for w in found)
    assert any("unix_stream_sendmsg" in w["waker_stack"] for w in found)


def test_main_thread_woken_by_timers(demo_run: DemoRun) -> None:
    found = rows(demo_run.report, category="timer", target_role="main")
    assert count(found) >= 5, count(found)


def test_workers_woken_by_main_thread_over_eventfd(demo_run: DemoRun) -> None:
    found = rows(demo_run.report, category="eventfd", target_role="worker")
    assert found
    envoy_pid = found[0]["target"]["pid"]
    assert all(w["waker"]["pid"] == envoy_pid for w in found)  # always a thread of Envoy
    # The pilot-agent stand-in pushes a changed cluster (xDS) twice a second; the main
    # thread posts it to both workers.
    from_main = [w for w in found if w["waker"]["comm"] == "envoy"]
    assert count(from_main) >= 3, count(from_main)


def test_envoys_own_counters_beside_the_wakeups(demo_run: DemoRun) -> None:
    """The collector read Envoy's admin (a unix socket, found through Envoy's JSON
    bootstrap) before and after tracing: the xDS pushes, DNS refreshes and connections it
    counted itself are in the report, and so are its listening sockets."""
    [stats] = demo_run.report["envoy_stats"]
    envoy_pids = {w["target"]["pid"] for w in demo_run.report["wakeups"]}
    assert stats["pid"] in envoy_pids
    assert stats["admin"].startswith("unix:") and stats["admin"].endswith("/admin.sock")
    delta = stats["delta"]
    assert delta["cluster_manager.cds.update_success"] >= 3, delta  # a push every 500 ms
    assert delta["cluster_manager.cluster_modified"] >= 3, delta
    assert delta["cluster.upstream.update_attempt"] >= 10, delta  # DNS every 100 ms
    assert delta["listener.0.0.0.0_15021.downstream_cx_total"] >= 5, delta  # the probes
    assert stats["listeners"] == {"0.0.0.0:15006": 2, "0.0.0.0:15021": 2}


def test_access_log_flush_thread_runs(demo_run: DemoRun) -> None:
    found = [w for w in demo_run.report["wakeups"]
             if w["target"]["role"] == "access-log-flush"]
    assert found and count(found) >= 3


def test_envoy_threads_preempted_by_the_hog(demo_run: DemoRun) -> None:
    found = [w for w in demo_run.report["wakeups"]
             if w["category"] == "preempted-involuntary"
             and (w["preempted_by"] or {}).get("comm") == "cpu-hog"]
    assert count(found) >= 3, count(found)
    assert all(w["waker"] is None and w["cause"] == "none" for w in found)
    assert {w["target"]["role"] for w in found} & {"main", "worker"}


def test_nothing_of_the_demo_remains(demo_run: DemoRun) -> None:
    pids = Steps([demo_run.stderr]).pids()
    envoy_pids = {w["target"]["pid"] for w in demo_run.report["wakeups"]}
    assert len(pids) >= 7  # dnsmasq, upstream, envoy, pilot-agent, hog, kubelet, wrk
    assert envoy_pids <= pids
    assert_nothing_left(demo_run.cli_pid, pids | envoy_pids)


def _interrupt_demo(args: List[str], cwd: Path, at_line: str,
                    then_wait_s: float = 0.0) -> Tuple[int, int, str, str]:
    """Start the demo, send SIGINT once ``at_line`` appears on stderr (plus a wait), and
    return its pid, exit code, stdout and stderr."""
    proc = subprocess.Popen(
        plugin_cmd("demo", *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plugin_env(), cwd=cwd,
    )
    stderr_lines: List[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            stderr_lines.append(line)
            if at_line in line or time.monotonic() > deadline:
                break
        time.sleep(then_wait_s)
        os.kill(proc.pid, signal.SIGINT)
        stdout, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.pid, proc.returncode, stdout, "".join(stderr_lines) + rest


def test_ctrl_c_mid_trace_still_reports_and_cleans_up(tmp_path: Path) -> None:
    # Past "wrk sending load", 5 s cover the compile, the attach and a snapshot or two.
    pid, code, stdout, stderr = _interrupt_demo(
        ["--duration", "60s", "--format", "json"], tmp_path, "✓ wrk sending load",
        then_wait_s=5)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["source"]["end_reason"] == "signal"
    assert report["source"]["elapsed_s"] < 40
    assert rows(report, category="tcp-receive", target_role="worker", waker_comm="wrk")
    assert_nothing_left(pid, Steps([stderr]).pids())


def test_ctrl_c_during_set_up_removes_what_was_made(tmp_path: Path) -> None:
    pid, code, stdout, stderr = _interrupt_demo(["--duration", "5s"], tmp_path,
                                                "✓ dnsmasq answering")
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert stdout == ""
    assert_nothing_left(pid, Steps([stderr]).pids())


def test_killed_demo_leaves_no_process_and_the_next_one_removes_the_rest(
        tmp_path: Path) -> None:
    """SIGKILL gives the demo no chance to clean up: its processes die with it (parent-death
    signal), and the next demo removes the namespace, veth, cgroup and files it left."""
    proc = subprocess.Popen(plugin_cmd("demo", "--duration", "30s"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=plugin_env(), cwd=tmp_path)
    lines: List[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "✓ wrk sending load" in line:
                break
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pids = Steps(lines).pids()
    assert len(pids) >= 7
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]
    assert netns_exists(f"offwake-demo-{proc.pid}")  # what only the next demo can remove

    steps: List[str] = []
    with DemoMesh(on_step=steps.append, load_seconds=10):
        pass
    assert any(f"killed demo (pid {proc.pid})" in s for s in steps), steps
    assert_nothing_left(proc.pid, pids)


def test_demo_as_non_root_says_so() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    # A user namespace without a mapping: the uid is the overflow uid, not 0.
    proc = subprocess.run([unshare, "--user", *plugin_cmd("demo")], capture_output=True, text=True,
                          env=plugin_env(), timeout=60, cwd="/")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1
    assert "needs root" in proc.stderr and "sudo" in proc.stderr


def test_mesh_context_manager_cleans_up_after_an_error() -> None:
    """The environment module as tests use it: processes live in the demo's cgroup while
    it runs, and an exception inside the block still removes everything."""
    mesh = DemoMesh(load_seconds=20, prefix=f"offwake-demo-{os.getpid()}")
    seen: Set[int] = set()
    with pytest.raises(RuntimeError, match="boom"), mesh as info:
        seen = set(info.pids.values())
        assert info.tids("wrk:worker_") and len(info.tids("wrk:worker_")) == 2
        assert info.envoy_threads[info.envoy_pid] == "envoy"
        assert os.sched_getaffinity(info.envoy_pid) == {info.cpu}
        assert mesh.cgroup is not None
        if mesh.cgroup.created:
            assert seen <= set(mesh.cgroup.pids())
        raise RuntimeError("boom")
    assert_nothing_left(os.getpid(), seen)
