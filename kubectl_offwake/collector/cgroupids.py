"""Cgroup v2 ids back to cgroup paths: the pod of a waker that exited before /proc could say.

The BPF program takes a waker's cgroup id at the wake (``bpf_get_current_cgroup_id()``),
because a waker that lives a few milliseconds — a kubelet exec probe, a health check, a
``curl`` in a shell loop — is gone by the time the collector reads ``/proc/PID/cgroup``.
That id is the kernfs id of the waker's cgroup in the v2 hierarchy, which on 64-bit kernels
is the inode number of the cgroup's directory and is never reused. So the collector maps
ids to paths by walking the cgroup v2 mount and noting each directory's inode number
(``os.scandir`` gives it without a ``stat``).

The walk is lazy (the first unknown id starts it), done again when an id is not in the
index (a cgroup made since the last walk), at most once per snapshot, and bounded
(:data:`MAX_DIRS`). An id still unknown after a walk made after its wake belongs to a
cgroup removed since: it is remembered as unknown and never walked for again.

Paths come out as ``/proc/PID/cgroup`` would show them to the collector: the mount's root
(mountinfo's field for it, relative to the collector's cgroup namespace) joined with the
directory below the mount point.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

from .cgroups import mounts

#: Directories one walk visits at most: a node has a few per pod and container plus the
#: system's slices, so this is far above any real hierarchy and bounds a pathological one.
MAX_DIRS = 200_000
#: The id of the hierarchy's root cgroup (the inode number of its directory).
ROOT_ID = 1


@dataclass(frozen=True)
class V2Mount:
    """Where this process sees the cgroup v2 hierarchy, and which cgroup that directory is."""

    point: str
    root: str  # the cgroup path of ``point`` (``/`` when it is the whole hierarchy)


def cgroup2_mount(proc: str = "/proc") -> Optional[V2Mount]:
    """The cgroup v2 mount that sees most of the hierarchy, or None (a v1-only host).

    A mount hides those mounted before it on its point or below it. Among the visible ones,
    the hierarchy's root directory (the host's ``/sys/fs/cgroup``, or
    ``/sys/fs/cgroup/unified`` on a hybrid host, mounted into the collector's pod) beats a
    container's own view of its cgroup, which the collector's cgroup namespace may show
    as ``/`` too.
    """
    visible: Dict[str, str] = {}
    for point, fstype, _opts, root in mounts(proc):
        below = point.rstrip("/") + "/"
        for seen in [p for p in visible if p == point or p.startswith(below)]:
            del visible[seen]
        if fstype == "cgroup2":
            visible[point] = root
    ranked = []
    for point, root in visible.items():
        try:
            ino = os.stat(point).st_ino
        except OSError:
            continue
        ranked.append(((ino != ROOT_ID, root != "/", len(root), point), V2Mount(point, root)))
    return min(ranked)[1] if ranked else None


def join(root: str, rel: str) -> str:
    """A cgroup path from a mount's root and a directory below its point (no normalizing:
    a root outside the collector's cgroup namespace reads ``/../..``, as /proc shows it)."""
    if not rel:
        return root
    return root.rstrip("/") + "/" + rel


class CgroupPaths:
    """Cgroup v2 id -> cgroup path, by the inode numbers of the hierarchy's directories."""

    def __init__(self, mount: Optional[V2Mount] = None, max_dirs: int = MAX_DIRS,
                 proc: str = "/proc") -> None:
        self._mount = mount
        self._proc = proc
        self._found_mount = mount is not None
        self._max_dirs = max_dirs
        self._paths: Dict[int, str] = {}
        self._unknown: Set[int] = set()
        self._walked_this_snapshot = False
        #: Walks done, their time, and whether the last one stopped at ``max_dirs`` (the
        #: ``end`` record's ``cgroup_walks``, ``cgroup_walk_ms``).
        self.walks = 0
        self.seconds = 0.0
        self.truncated = False

    def new_snapshot(self) -> None:
        """The maps were drained again: ids from now on may name cgroups made since the
        last walk, so one more walk is allowed."""
        self._walked_this_snapshot = False

    def path(self, cgroup_id: int) -> Optional[str]:
        """The path of the cgroup with this id, or None (no v2 hierarchy here, the id is 0
        (not taken), or the cgroup was removed before a walk could see it)."""
        if cgroup_id <= 0 or cgroup_id in self._unknown:
            return None
        found = self._paths.get(cgroup_id)
        if found is not None:
            return found
        if not self._walked_this_snapshot:
            self._walk()
            found = self._paths.get(cgroup_id)
            if found is not None:
                return found
        # A walk made after this id's wake did not find it: the cgroup is gone for good.
        self._unknown.add(cgroup_id)
        return None

    def _walk(self) -> None:
        self._walked_this_snapshot = True
        if not self._found_mount:
            self._mount = cgroup2_mount(self._proc)
            self._found_mount = True
        mount = self._mount
        if mount is None:
            return
        self.walks += 1
        t0 = time.monotonic()
        try:
            self._index(mount)
        finally:
            self.seconds += time.monotonic() - t0

    def _index(self, mount: V2Mount) -> None:
        try:
            self._paths[os.stat(mount.point).st_ino] = mount.root
        except OSError:
            return
        pending: List[str] = [""]
        visited = 0
        while pending:
            rel = pending.pop()
            try:
                with os.scandir(os.path.join(mount.point, rel)) as entries:
                    for entry in entries:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        visited += 1
                        if visited > self._max_dirs:
                            self.truncated = True
                            return
                        sub = f"{rel}/{entry.name}" if rel else entry.name
                        self._paths[entry.inode()] = join(mount.root, sub)
                        pending.append(sub)
            except OSError:
                continue  # removed while we walked
        self.truncated = False
