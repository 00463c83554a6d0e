"""Recordings of a run over several nodes: cut per pod, merged across nodes, file names."""

from __future__ import annotations

from kubectl_offwake.analysis.model import Edge, EnvoyStats, ProcessInfo, Recording, Stack, Task
from kubectl_offwake.analysis.recordings import merge, split_by_pod
from kubectl_offwake.pipeline.paths import default_save_path, recording_paths, report_path


def _recording(node, pods):
    rec = Recording(source={"node": node})
    stack = rec.stacks.intern(("schedule", "epoll_wait"), 2)
    for pid, pod in pods.items():
        info = ProcessInfo(pid=pid, comm="envoy", pod=pod, container="istio-proxy")
        rec.processes[pid] = info
        rec.targets.append(info)
        rec.edges.append(Edge(Task("envoy", pid, pid), stack, None, None, 100 * pid, count=1))
        rec.envoy_stats.append(EnvoyStats(pid, "127.0.0.1:15000", 5.0,
                                          {"server.dns_refreshes": pid}))
    rec.totals = {"switches": 10}
    return rec


def test_split_by_pod_keeps_only_that_pods_threads():
    rec = _recording("n1", {10: "app/a", 20: "app/b"})
    parts = split_by_pod(rec)
    assert sorted(parts) == ["app/a", "app/b"]
    assert [e.target.pid for e in parts["app/a"].edges] == [10]
    assert [t.pid for t in parts["app/b"].targets] == [20]
    assert parts["app/a"].source["pod"] == "app/a"
    assert [s.pid for s in parts["app/a"].envoy_stats] == [10]  # each pod its own Envoy's
    assert len(rec.edges) == 2 and len(rec.envoy_stats) == 2  # the original is untouched


def test_merge_joins_nodes_and_warns_on_pid_collisions():
    one = _recording("n1", {10: "app/a"})
    two = _recording("n2", {10: "app/b", 30: "app/c"})
    merged = merge([one, two], ["n1", "n2"])
    assert len(merged.edges) == 3 and len(merged.targets) == 3
    assert merged.totals == {"switches": 20}
    assert [s.delta for s in merged.envoy_stats] == [  # every node's counters are kept
        {"server.dns_refreshes": 10}, {"server.dns_refreshes": 10},
        {"server.dns_refreshes": 30}]
    assert merged.source["nodes"] == ["n1", "n2"]
    assert merged.processes[10].pod == "app/a"
    assert any("more than one node" in w for w in merged.warnings)
    assert merge([one]) is one
    assert isinstance(merged.edges[0].target_stack, Stack)


def test_paths():
    assert recording_paths("r.jsonl.gz", ["n1"]) == {"n1": "r.jsonl.gz"}
    assert recording_paths("r.jsonl.gz", ["n1", "n/2"]) == {
        "n1": "r-n1.jsonl.gz", "n/2": "r-n_2.jsonl.gz"}
    assert report_path("out/incident.html", "app/web-1") == "out/incident.app_web-1.html"
    assert report_path("x.speedscope.json", "a/b") == "x.a_b.speedscope.json"
    name = default_save_path("my envoy/1")
    assert name.startswith("offwake-my_envoy_1-") and name.endswith(".jsonl.gz")


def test_merge_prefers_the_target_side_of_a_pid_collision():
    one = _recording("n1", {10: "app/a"})
    one.processes[30] = ProcessInfo(pid=30, comm="envoy", label="host: envoy")
    two = _recording("n2", {30: "app/c"})
    merged = merge([one, two], ["n1", "n2"])
    assert merged.processes[30].pod == "app/c"
    assert merged.processes[10].pod == "app/a"
