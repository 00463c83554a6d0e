"""Resolving a container id to its Envoy on the host, as the node collector must (root).

Processes are placed into cgroups named the way containerd, CRI-O and the kubelet name them
(systemd and cgroupfs drivers, cgroup v2 and the v1 ``pids``/``name=systemd`` hierarchies),
under a private ``h5-*`` parent so nothing real is touched. Each container holds a
``pilot-agent`` and an ``envoy`` (copies of ``sleep``): the collector must pick Envoy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs"))
import harness  # noqa: E402

from kubectl_offwake.analysis.analyze import analyze  # noqa: E402
from kubectl_offwake.collector.identity import describe  # noqa: E402
from kubectl_offwake.collector.main import target_record  # noqa: E402
from kubectl_offwake.collector.targets import resolve  # noqa: E402
from kubectl_offwake.importers import load_text  # noqa: E402

pytestmark = [pytest.mark.root]

CGROUP = "/sys/fs/cgroup"

if os.geteuid() != 0:
    pytest.skip("needs root (cgroups)", allow_module_level=True)


def _hierarchy(kind: str) -> Optional[str]:
    """Mount point of a hierarchy we may use (never the v1 memory hierarchy)."""
    cands = {"v2": [f"{CGROUP}/unified", CGROUP], "pids": [f"{CGROUP}/pids"],
             "systemd": [f"{CGROUP}/systemd"]}[kind]
    for path in cands:
        if not os.path.isdir(path):
            continue
        if kind == "v2" and not os.path.exists(os.path.join(path, "cgroup.controllers")):
            continue
        if kind != "v2" and os.path.exists(os.path.join(path, "cgroup.controllers")):
            continue
        return path
    return None


@dataclass
class Container:
    name: str
    hierarchy: str
    rel: str  # path below the private parent
    cid: str
    runtime: Optional[str]
    pod_uid: str
    pids: Dict[str, int]


def _layout(kind: str, cid: str, uid: str) -> Tuple[str, Optional[str]]:
    under = uid.replace("-", "_")
    if kind == "containerd-systemd":
        return (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/"
                f"cri-containerd-{cid}.scope", "containerd")
    if kind == "crio-systemd":
        return (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/"
                f"crio-{cid}.scope", "cri-o")
    if kind == "cgroupfs":
        return f"kubepods/burstable/pod{uid}/{cid}", None
    if kind == "docker-systemd":
        return (f"kubepods.slice/kubepods-pod{under}.slice/docker-{cid}.scope", "docker")
    raise ValueError(kind)


CASES = [
    ("containerd-systemd", "v2"),
    ("crio-systemd", "v2"),
    ("cgroupfs", "v2"),
    ("containerd-systemd", "pids"),
    ("cgroupfs", "systemd"),
    ("docker-systemd", "pids"),
]


@pytest.fixture(scope="module")
def containers():
    tmp = tempfile.mkdtemp(prefix="h5-cg-")
    parent = f"h5-{uuid.uuid4().hex[:8]}"
    made: List[str] = []
    procs: List[subprocess.Popen] = []
    out: Dict[str, Container] = {}
    try:
        sleep = shutil.which("sleep")
        assert sleep is not None
        for name in ("envoy", "pilot-agent"):
            shutil.copy(sleep, os.path.join(tmp, name))
        for kind, hier_kind in CASES:
            hier = _hierarchy(hier_kind)
            if hier is None:
                continue
            cid = uuid.uuid4().hex + uuid.uuid4().hex
            uid = str(uuid.uuid4())
            rel, runtime = _layout(kind, cid, uid)
            path = os.path.join(hier, parent, rel)
            # remember each directory we create, deepest last
            cur = hier
            for part in [parent, *rel.split("/")]:
                cur = os.path.join(cur, part)
                if not os.path.isdir(cur):
                    os.mkdir(cur)
                    made.append(cur)
            pids = {}
            for exe in ("pilot-agent", "envoy"):
                p = subprocess.Popen([os.path.join(tmp, exe), "600"])
                procs.append(p)
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(p.pid))
                pids[exe] = p.pid
            out[f"{kind}@{hier_kind}"] = Container(f"{kind}@{hier_kind}", hier, rel, cid,
                                                   runtime, uid, pids)
        yield out
    finally:
        for p in procs:
            p.kill()
            p.wait()
        time.sleep(0.2)
        for d in reversed(made):
            for _ in range(20):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.1)
        shutil.rmtree(tmp, ignore_errors=True)


def _resolve(*container_ids: str, comm: Optional[str] = None) -> Tuple[List[dict], List[str]]:
    """The records the collector writes for what it resolved (its ``target`` record, then
    a ``process`` record per target), and its notes: the collector's own functions, as its
    run calls them before tracing."""
    res = resolve(comm=comm, container_ids=container_ids)
    records: List[dict] = []
    if res.targets:
        records.append(dict(target_record(res.targets)))
        records += [dict(describe(t.pid, t.comm, with_threads=True)) for t in res.targets]
    return records, res.notes


@pytest.mark.parametrize("case", [f"{k}@{h}" for k, h in CASES])
def test_container_id_picks_envoy(containers, case):
    if case not in containers:
        pytest.skip(f"hierarchy for {case} not mounted here")
    c = containers[case]
    records, _notes = _resolve(c.cid)
    target = next(r for r in records if r["type"] == "target")
    assert [p["pid"] for p in target["processes"]] == [c.pids["envoy"]]
    proc = target["processes"][0]
    assert proc["comm"] == "envoy" and proc["by"] == "container-id"
    assert proc["container_id"] == c.cid
    assert proc.get("runtime") == c.runtime
    assert proc["pod_uid"] == c.pod_uid
    assert proc["cgroup"].endswith(c.rel)
    ident = next(r for r in records if r["type"] == "process" and r["pid"] == c.pids["envoy"])
    assert ident["container_id"] == c.cid and ident["pod_uid"] == c.pod_uid
    assert ident["kernel_thread"] is False


def test_container_id_forms(containers):
    c = next(iter(containers.values()))
    for form in (f"containerd://{c.cid}", c.cid[:12], c.cid.upper()):
        target = next(r for r in _resolve(form)[0] if r["type"] == "target")
        assert [p["pid"] for p in target["processes"]] == [c.pids["envoy"]], form


def test_comm_inside_container_and_unknown_id(containers):
    c = next(iter(containers.values()))
    target = next(r for r in _resolve(c.cid, comm="pilot-agent")[0] if r["type"] == "target")
    assert [p["pid"] for p in target["processes"]] == [c.pids["pilot-agent"]]
    records, notes = _resolve("f" * 64)
    assert records == []
    assert notes == ["no process in container ffffffffffff"]


def test_trace_by_container_id(tmp_path):
    """One real trace resolved by container id: identity records carry the container."""
    hier = _hierarchy("v2")
    if hier is None or harness.skip_reason():
        pytest.skip("needs cgroup v2 and eBPF")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    uid = str(uuid.uuid4())
    rel, _ = _layout("containerd-systemd", cid, uid)
    parent = os.path.join(hier, f"h5-{uuid.uuid4().hex[:8]}")
    made = []
    cur = hier
    for part in [os.path.basename(parent), *rel.split("/")]:
        cur = os.path.join(cur, part)
        os.mkdir(cur)
        made.append(cur)
    exe = harness.compile_prog("eventfd", str(tmp_path))
    prog = harness.Prog(exe, 20, 10)
    collector = None
    try:
        with open(os.path.join(cur, "cgroup.procs"), "w") as f:
            f.write(str(prog.pid))
        collector = harness.Collector(["--container-id", cid, "--duration", "60"])
        collector.wait_attached()
        prog.go()
        prog.wait_done()
        assert collector.stop() == 0
    finally:
        prog.close()
        if collector is not None and collector.proc.poll() is None:
            collector.proc.kill()
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
    rec = load_text(collector.text(), "collector")
    info = rec.processes[prog.pid]
    assert info.container_id == cid and info.runtime == "containerd" and info.pod_uid == uid
    report = analyze(rec)
    assert any(w.target.tid == prog.target_tid and w.category == "eventfd"
               for w in report.wakeups)
