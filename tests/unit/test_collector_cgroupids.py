"""Cgroup ids to paths (collector/cgroupids.py), on a directory tree standing in for the
cgroup v2 mount: its directories' inode numbers are the ids, as on cgroupfs."""

from __future__ import annotations

import os
from pathlib import Path

from kubectl_offwake.collector.bpfprog import KERNEL_USTACKS, NO_CGROUP_ID, compile_program
from kubectl_offwake.collector.cgroupids import CgroupPaths, V2Mount, cgroup2_mount
from kubectl_offwake.collector.identity import Identities

CID = "ab" * 32
SCOPE = ("kubepods.slice/kubepods-burstable.slice/"
         "kubepods-burstable-pod0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0.slice/"
         f"cri-containerd-{CID}.scope")


def _ino(path: Path) -> int:
    return os.stat(path).st_ino


def _tree(root: Path) -> Path:
    scope = root / SCOPE
    scope.mkdir(parents=True)
    (root / "system.slice" / "kubelet.service").mkdir(parents=True)
    (scope / "cgroup.procs").write_text("")  # files are not cgroups
    return scope


def test_ids_map_to_paths_under_the_mount_root(tmp_path):
    scope = _tree(tmp_path)
    paths = CgroupPaths(V2Mount(str(tmp_path), "/"))
    assert paths.path(_ino(scope)) == "/" + SCOPE
    assert paths.path(_ino(tmp_path)) == "/"
    assert paths.path(_ino(tmp_path / "system.slice")) == "/system.slice"
    assert paths.walks == 1  # one walk indexed them all
    # a mount of part of the hierarchy: its root prefixes every path, as /proc shows them
    nested = CgroupPaths(V2Mount(str(tmp_path / "kubepods.slice"), "/kubepods.slice"))
    assert nested.path(_ino(scope)) == "/" + SCOPE


def test_an_unknown_id_walks_again_once_per_snapshot_and_is_then_remembered(tmp_path):
    _tree(tmp_path)
    paths = CgroupPaths(V2Mount(str(tmp_path), "/"))
    assert paths.path(0) is None and paths.walks == 0  # 0: the program took no id
    assert paths.path(_ino(tmp_path)) == "/"
    late = tmp_path / "late.slice"
    late.mkdir()
    assert paths.path(_ino(late)) is None  # made after this snapshot's walk
    assert paths.walks == 1
    paths.new_snapshot()
    assert paths.path(_ino(tmp_path / "system.slice")) == "/system.slice"  # known: no walk
    assert paths.walks == 1
    # an id unknown after a walk made after its wake: removed, never walked for again
    gone = tmp_path / "gone.scope"
    gone.mkdir()
    gone_id = _ino(gone)
    gone.rmdir()
    assert paths.path(gone_id) is None and paths.walks == 2
    paths.new_snapshot()
    assert paths.path(gone_id) is None and paths.walks == 2


def test_a_walk_is_bounded(tmp_path):
    scope = _tree(tmp_path)
    paths = CgroupPaths(V2Mount(str(tmp_path), "/"), max_dirs=2)
    assert paths.path(_ino(scope)) is None
    assert paths.truncated


def test_the_visible_v2_mount_that_sees_the_whole_hierarchy(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    host = tmp_path / "host\ncg"  # an escaped mount point (\012 in mountinfo)
    own = tmp_path / "own"
    hidden = tmp_path / "hidden"
    for d in (host, own, hidden):
        d.mkdir()
    esc = str(host).replace("\n", "\\012")
    (proc / "self" / "mountinfo").write_text(
        f"29 20 0:28 / {tmp_path} rw - tmpfs tmpfs rw\n"
        f"30 29 0:26 / {own} rw - cgroup2 cgroup2 rw\n"
        f"31 29 0:26 /../.. {esc} rw - cgroup2 cgroup2 rw\n"
        f"32 29 0:26 / {hidden} rw - cgroup2 cgroup2 rw\n"
        f"33 29 0:27 / {hidden} rw - cgroup cgroup rw,pids\n")  # hides the one before
    # neither is the hierarchy's root directory (inode 1) here: the shorter root wins
    assert cgroup2_mount(str(proc)) == V2Mount(str(own), "/")
    with open(proc / "self" / "mountinfo", "a") as f:
        f.write(f"34 20 0:29 / {tmp_path} rw - tmpfs tmpfs rw\n")  # hides all below it
    assert cgroup2_mount(str(proc)) is None
    (proc / "self" / "mountinfo").write_text(
        f"31 20 0:26 /../.. {esc} rw - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(str(proc)) == V2Mount(str(host), "/../..")
    (proc / "self" / "mountinfo").write_text(f"33 20 0:27 / {hidden} rw - cgroup cgroup rw\n")
    assert cgroup2_mount(str(proc)) is None
    assert CgroupPaths(proc=str(proc)).path(5) is None


def test_a_vanished_process_is_placed_by_the_cgroup_bpf_saw_it_in(tmp_path):
    scope = _tree(tmp_path)
    ids = Identities(CgroupPaths(V2Mount(str(tmp_path), "/")))
    pid = 2 ** 22 + 1  # above any pid_max: no such process
    ids.note_cgroup(pid, _ino(scope))
    rec = ids.new_record(pid, "curl")
    assert rec is not None and rec["gone"] is True and rec["comm"] == "curl"
    assert rec["cgroup"] == "/" + SCOPE and rec["container_id"] == CID
    assert rec["runtime"] == "containerd"
    assert rec["pod_uid"] == "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    assert ids.new_record(pid, "curl") is None  # sent once
    # met first as a preemptor (no cgroup id), placed when a later snapshot has its wake:
    # its record goes out again, placed
    other = ids.new_record(pid + 1, "sh")
    assert other is not None and "cgroup" not in other
    assert ids.new_record(pid + 1, "sh") is None
    ids.note_cgroup(pid + 1, _ino(scope))
    again = ids.new_record(pid + 1, "sh")
    assert again is not None and again["container_id"] == CID and again["gone"] is True
    assert ids.new_record(pid + 1, "sh") is None
    # a live process is described by /proc, whatever cgroup BPF saw
    ids.note_cgroup(os.getpid(), _ino(scope))
    live = ids.new_record(os.getpid(), "python3")
    assert live is not None and live.get("container_id") != CID


class _NoCgroupIdBPF:
    """Stands in for bcc.BPF on a kernel before 4.18: no bpf_task_pt_regs, no
    bpf_get_current_cgroup_id."""

    builds: list = []

    def __init__(self, text: str, cflags: list) -> None:
        _NoCgroupIdBPF.builds.append(list(cflags))
        if NO_CGROUP_ID not in cflags:
            raise Exception("unknown func bpf_get_current_cgroup_id#80")


def test_a_kernel_without_the_cgroup_id_helper_gets_a_build_without_it():
    _NoCgroupIdBPF.builds = []
    notes: list = []
    compile_program(_NoCgroupIdBPF, "text", ["-DX=1"], notes)
    assert _NoCgroupIdBPF.builds == [["-DX=1"], ["-DX=1", KERNEL_USTACKS],
                                     ["-DX=1", KERNEL_USTACKS, NO_CGROUP_ID]]
    assert len(notes) == 2 and "named by its comm only" in notes[1]
