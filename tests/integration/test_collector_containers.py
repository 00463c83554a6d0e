"""Resolving a container id to its Envoy on the host, as the node collector must (root),
and naming wakers by their container, also those that exit right after they woke the target.

Processes are placed into cgroups named the way containerd, CRI-O and the kubelet name them
(systemd and cgroupfs drivers, cgroup v2 and the v1 ``pids``/``name=systemd`` hierarchies),
under a private ``h5-*`` parent so nothing real is touched. Each container holds a
``pilot-agent`` and an ``envoy`` (copies of ``sleep``): the collector must pick Envoy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

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
        _remove_cgroups(made)
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_cgroups(made: List[str]) -> None:
    """Removes the cgroups a fixture made, innermost first (a cgroup whose last process
    just exited can refuse rmdir for a moment)."""
    for d in reversed(made):
        for _ in range(20):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.1)


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


@dataclass
class V2Container:
    """A containerd container's cgroup (systemd driver) in the v2 hierarchy."""

    cid: str
    pod_uid: str
    path: str  # its directory

    def join(self, pid: int) -> None:
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid))


@contextmanager
def v2_container() -> Iterator[V2Container]:
    """A fresh container cgroup under a private ``h5-*`` parent, removed afterwards (its
    processes must have ended by then)."""
    hier = _hierarchy("v2")
    if hier is None or harness.skip_reason():
        pytest.skip("needs cgroup v2 and eBPF")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    uid = str(uuid.uuid4())
    rel, _ = _layout("containerd-systemd", cid, uid)
    made = []
    cur = hier
    try:
        for part in [f"h5-{uuid.uuid4().hex[:8]}", *rel.split("/")]:
            cur = os.path.join(cur, part)
            os.mkdir(cur)
            made.append(cur)
        yield V2Container(cid, uid, cur)
    finally:
        _remove_cgroups(made)


def test_trace_by_container_id(tmp_path):
    """One real trace resolved by container id: identity records carry the container."""
    with v2_container() as container:
        exe = harness.compile_prog("eventfd", str(tmp_path))
        prog = harness.Prog(exe, 20, 10)
        collector = None
        try:
            container.join(prog.pid)
            collector = harness.Collector(["--container-id", container.cid, "--duration", "60"])
            collector.wait_attached()
            prog.go()
            prog.wait_done()
            assert collector.stop() == 0
        finally:
            prog.close()
            if collector is not None and collector.proc.poll() is None:
                collector.proc.kill()
    rec = load_text(collector.text(), "collector")
    info = rec.processes[prog.pid]
    assert info.container_id == container.cid and info.runtime == "containerd"
    assert info.pod_uid == container.pod_uid
    report = analyze(rec)
    assert any(w.target.tid == prog.target_tid and w.category == "eventfd"
               for w in report.wakeups)


#: Short-lived writers the shell starts, one after another.
WRITERS = 30


def _trace_short_lived_writers(tmp: str, extra: List[str]) -> Tuple[List[dict], str, int,
                                                                    V2Container]:
    """``fifo_read`` (the target, on the host) woken by ``WRITERS`` processes that each live
    for one write: a shell in a container cgroup starts ``/usr/bin/printf x`` into the FIFO
    and waits for it, again and again (as a ``curl`` loop in an app container wakes its
    sidecar). Returns the records, the writer's program name, the target's thread id and
    the container."""
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    printf = shutil.which("printf", path="/usr/bin:/bin")
    assert printf is not None
    with v2_container() as container:
        prog = harness.Prog(harness.compile_prog("fifo_read", tmp), WRITERS, 20, [fifo])
        shell = subprocess.Popen(
            ["/bin/sh", "-c", f"read go; i=0; while [ $i -lt {WRITERS} ]; do {printf} x; "
             f"sleep 0.02; i=$((i+1)); done > {fifo}"], stdin=subprocess.PIPE)
        collector = None
        try:
            container.join(shell.pid)  # its children start there
            collector = harness.Collector(["--pid", str(prog.pid), "--interval", "1",
                                           "--duration", "60", *extra])
            collector.wait_attached()
            prog.go()
            assert shell.stdin is not None
            shell.stdin.write(b"go\n")
            shell.stdin.close()
            prog.wait_done()
            assert shell.wait(timeout=30) == 0
            assert collector.stop() == 0, collector.stderr[-2000:]
        finally:
            if shell.poll() is None:
                shell.kill()
                shell.wait()
            prog.close()
            if collector is not None and collector.proc.poll() is None:
                collector.proc.kill()
    return collector.records(), os.path.basename(printf), prog.target_tid, container


def _writer_records(records: List[dict], comm: str, target_tid: int) -> List[dict]:
    """The ``process`` records of the writers that woke the target (the last of each: a
    process met first as a preemptor is described again once its wake places it)."""
    wakers = {r["waker_pid"] for r in records
              if r["type"] == "wakeup" and r["tid"] == target_tid and r["state"] == "blocked"
              and r["waker_comm"] == comm}
    found = {r["pid"]: r for r in records if r["type"] == "process" and r["pid"] in wakers}
    assert len(found) == len(wakers) >= WRITERS // 2, (len(found), len(wakers))
    return list(found.values())


def test_a_waker_that_exited_at_once_is_named_by_its_container(tmp_path):
    """A waker gone before the snapshot that first names it: its cgroup comes from the id
    BPF took at the wake, so its ``process`` record still carries its container and pod."""
    records, comm, tid, container = _trace_short_lived_writers(str(tmp_path), [])
    writers = _writer_records(records, comm, tid)
    gone = [r for r in writers if r.get("gone")]
    assert gone, "every writer was still alive at its snapshot: nothing was tested"
    for r in writers:
        assert r["container_id"] == container.cid, r
        assert r["runtime"] == "containerd" and r["pod_uid"] == container.pod_uid, r
        assert r["cgroup"].endswith(container.path.split("/h5-", 1)[1]), r
    info = load_text("".join(json.dumps(r) + "\n" for r in records), "collector").processes
    assert {info[r["pid"]].container_id for r in gone} == {container.cid}


def test_without_the_cgroup_id_helper_a_vanished_waker_has_no_container(tmp_path):
    """The build for kernels without bpf_get_current_cgroup_id loads and traces; what it
    cannot do is place a waker that exited before /proc could be read."""
    records, comm, tid, _container = _trace_short_lived_writers(str(tmp_path),
                                                                ["--cflag=-DNO_CGROUP_ID"])
    gone = [r for r in _writer_records(records, comm, tid) if r.get("gone")]
    assert gone and not any("container_id" in r for r in gone), gone
