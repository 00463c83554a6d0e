"""Findings: each one appears for a crafted recording with its signature, and stays silent
for a near miss (just under a threshold, or a piece of its evidence missing).

One file per family of detectors (test_findings_<family>.py, as the modules of
kubectl_offwake/analysis/findings/); this one holds what spans them: ordering, several
traced processes, imports without pids or counts.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import get_args

import pytest

from kubectl_offwake.analysis import report
from kubectl_offwake.analysis.findings import (
    DETECTORS,
    connections,
    control,
    cpu,
    evidence,
    health,
    oncpu,
    threads,
)
from tests.unit.findings_support import T_EPOLL_IDLE, ids, one, workers_busy
from tests.unit.test_aggregate import (
    APP,
    COREDNS,
    CRUNCHER,
    KUBELET,
    SWAPPER,
    U_POST,
    W_EVENTFD,
    W_TCP,
    W_TIMER,
    W_UDP,
    W_UNIX,
    Mesh,
    waker,
)

# -- general ---------------------------------------------------------------------------------

def test_quiet_recording_has_no_findings() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 20_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 100, 20_000_000)
    m.wake("envoy", waker(SWAPPER), W_TIMER, 150, 29_000_000)
    m.oncpu("wrk:worker_0", 300_000, 2_000)
    m.oncpu("wrk:worker_1", 280_000, 2_000)
    assert m.report().findings == []


def test_findings_sorted_by_severity_and_serialisable() -> None:
    import json

    m = Mesh(duration_s=30)
    workers_busy(m, 0.25, by=waker(CRUNCHER))
    m.throttled(nr_throttled=48)
    m.wake("envoy", waker(COREDNS), W_UDP, 1142, 10_000_000)
    m.rec.lost["stack_eexist"] = 1
    r = m.report()
    order = {"critical": 0, "warning": 1, "info": 2}
    assert [order[f.severity] for f in r.findings] == sorted(order[f.severity]
                                                             for f in r.findings)
    assert len(r.findings) >= 3
    for f in r.findings:
        json.dumps(f.evidence)
        assert f.text.endswith(".") and "\n" not in f.text


def test_thresholds_are_named_constants() -> None:
    assert 0 < cpu.RUNQ_SHARE_MIN < cpu.RUNQ_SHARE_CRITICAL < 1
    assert oncpu.STALL_US < oncpu.STALL_CRITICAL_US


def test_findings_name_the_pod_when_several_are_traced() -> None:
    from kubectl_offwake.analysis.model import ProcessInfo, Task

    m = Mesh(duration_s=30)
    m.rec.processes[500] = ProcessInfo(500, "envoy", pod="app/reviews-v2", container="istio-proxy")
    m.wake("wrk:worker_0", waker(APP), W_TCP, 100, 1_000_000)
    other_main = Task("envoy", 500, 500)
    m.rec.edges.append(m.rec.edges[0].__class__(
        target=other_main, target_stack=m.stack(T_EPOLL_IDLE), waker=waker(COREDNS),
        waker_stack=m.stack(W_UDP), total_us=5_000_000, count=900, max_us=1, blocked_us=1,
        runq_us=0))
    f = one(m.report(), "dns-storm")
    assert " in app/reviews-v2/istio-proxy " in f.text


def test_throttling_counters_belong_to_their_pod() -> None:
    from kubectl_offwake.analysis.model import Throttling

    m = Mesh()
    workers_busy(m, 0.25, by=waker(CRUNCHER))
    m.rec.throttling.append(Throttling(500, "/other", {"nr_throttled": 0}, {"nr_throttled": 99}))
    m.throttled(nr_throttled=0)
    r = m.report()
    assert "cpu-throttling" not in ids(r)
    assert one(r, "noisy-neighbour").evidence["nr_throttled"] == 0


def test_imports_without_pids_or_counts_still_get_time_based_findings() -> None:
    """BCC folded output: comms only, no counts. Envoy's threads count as one process."""
    from kubectl_offwake.analysis.model import Edge, Recording, Task

    rec = Recording(source={"duration_s": 10})
    ts = rec.stacks.intern(T_EPOLL_IDLE, len(T_EPOLL_IDLE))
    worker, main, app = Task("wrk:worker_0", None, 11), Task("envoy", None, 10), \
        Task("gunicorn", None, 20)
    rec.edges.append(Edge(worker, ts, main, rec.stacks.intern(W_EVENTFD + U_POST,
                                                              len(W_EVENTFD)), 800_000))
    rec.edges.append(Edge(worker, ts, app, rec.stacks.intern(W_TCP, len(W_TCP)), 200_000))
    rec.edges.append(Edge(main, ts, app, rec.stacks.intern(W_UNIX, len(W_UNIX)), 200_000))
    from kubectl_offwake.analysis import analyze

    r = analyze(rec)
    f = one(r, "cross-thread-posts")
    assert f.evidence["basis"] == "off-CPU time" and " in " not in f.text.split("(")[0]
    assert "800 ms of 1.00 s off-CPU" in f.text
    assert not {"dns-storm", "xds-churn", "dominant-waker"} & set(ids(r))


# -- the package: one loop over the traced processes, the duration rule, the vocabulary --------

def test_each_traced_process_gets_its_own_finding_in_order() -> None:
    from kubectl_offwake.analysis.model import Edge, ProcessInfo, Task

    m = Mesh(duration_s=30)
    m.wake("envoy", waker(COREDNS), W_UDP, 1142, 10_000_000)
    m.rec.processes[500] = ProcessInfo(500, "envoy", pod="app/reviews-v2", container="istio-proxy")
    m.rec.edges.append(Edge(
        target=Task("envoy", 500, 500), target_stack=m.stack(T_EPOLL_IDLE),
        waker=waker(COREDNS), waker_stack=m.stack(W_UDP), total_us=5_000_000, count=300,
        max_us=1, blocked_us=1, runq_us=0))
    storms = [f for f in m.report().findings if f.id == "dns-storm"]
    assert [f.evidence["wakeups"] for f in storms] == [1142, 300]
    assert " in app/productpage-v1/istio-proxy " in storms[0].text
    assert " in app/reviews-v2/istio-proxy " in storms[1].text


def test_severities_and_causes_are_the_documented_strings() -> None:
    """docs/report-json.md lists them; the JSON report carries them as they are."""
    from kubectl_offwake.analysis import analyze
    from tests.sample_recording import build_sample_recording

    assert set(report.SEVERITIES) == set(get_args(report.Severity)) == {
        "info", "warning", "critical"}
    assert set(get_args(report.Cause)) == {"waker", "interrupt", "ksoftirqd", "none"}
    r = analyze(build_sample_recording())
    assert r.findings and {f.severity for f in r.findings} <= set(report.SEVERITIES)
    assert {w.cause for w in r.wakeups} == set(get_args(report.Cause))


def test_an_unknown_category_fails_when_the_package_loads() -> None:
    with pytest.raises(ValueError, match="no-such-category"):
        evidence.category("no-such-category")


FAMILIES = (connections, control, cpu, health, oncpu, threads)


@pytest.mark.parametrize("module", FAMILIES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_threshold_says_why_beside_its_detector(module) -> None:
    """Each numeric constant of a family module has a ``#:`` comment right above it."""
    lines = inspect.getsource(module).splitlines()
    thresholds = [i for i, line in enumerate(lines)
                  if re.match(r"^[A-Z][A-Z0-9_]* = [0-9][0-9_.]*$", line)]
    assert thresholds
    for i in thresholds:
        assert lines[i - 1].startswith("#: "), f"{module.__name__}: {lines[i]} has no reason"


def test_every_detector_runs() -> None:
    names = {d.__name__ for d in DETECTORS}
    assert names == {"cpu_shortage", "dns_storm", "xds_churn", "cross_thread_posts",
                     "main_lock", "access_log_flush", "accept_herd", "hot_worker",
                     "event_loop_stall", "still_off_cpu", "dominant_waker", "losses"}


def test_report_json_doc_lists_every_finding_its_severities_and_evidence() -> None:
    """docs/report-json.md's table of findings is the code's, id by id."""
    from pathlib import Path

    from tests.unit.test_findings_connections import herd
    from tests.unit.test_findings_control import dns, xds_pushes
    from tests.unit.test_findings_cpu import neighbour, throttled_share
    from tests.unit.test_findings_health import blocked, dominant, lost
    from tests.unit.test_findings_oncpu import ratio, stall
    from tests.unit.test_findings_threads import flush_rate, main_lock, post_share

    doc = Path(__file__).parents[2].joinpath("docs", "report-json.md").read_text()
    rows = {}
    for line in doc.split("## `findings[]`")[1].split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0] != "`id`":
            rows[cells[0].strip("`")] = cells
    made = [throttled_share(0.25), neighbour(900_000), dns(1142), xds_pushes(188),
            post_share(10), main_lock(400_000), flush_rate(308), herd([845, 844], 847),
            ratio(9_000_000), stall(250_000), blocked(600_000), dominant(600), lost(50)]
    found = {f.id: f for m in made for f in m.report().findings}
    assert set(rows) == set(found)
    for fid, (_, severities, module, keys) in rows.items():
        documented = set(re.findall(r"`([^`]+)`", keys))
        for other in documented & set(rows):
            documented = documented - {other} | set(re.findall(r"`([^`]+)`", rows[other][3]))
        assert documented == set(found[fid].evidence), fid
        assert found[fid].severity in severities, fid
        source = inspect.getsource(getattr(sys.modules[__name__], module.strip("`")))
        assert f'id="{fid}"' in source, (fid, module)

    def runs(names):  # consecutive repeats collapsed
        return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]

    table_order = runs([cells[2].strip("`") for cells in rows.values()])
    assert table_order == runs([d.__module__.rsplit(".", 1)[-1] for d in DETECTORS])
