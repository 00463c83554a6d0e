"""The image's root filesystem: mmdebstrap, the bundled kernel headers, then image/slim.

mmdebstrap installs exactly the resolved versions (``--variant=custom`` with every package
pinned), with /usr merged the way Debian 12 ships it. Root is needed: mmdebstrap's root
mode and image/slim both chroot into the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Callable, Dict, List, Optional

from .recipe import BUNDLED_ROOT, PACKAGES, PYTHON_MODULES, SLIM

MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/merged-usr"
#: What that hook installs: resolving it up front keeps apt from choosing usrmerge (and Perl).
MERGED_USR_PACKAGES = ("usr-is-merged",)
#: The chroot's environment: nothing of the caller's (PYTHONPATH, locale) leaks in.
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "LC_ALL": "C.UTF-8", "HOME": "/root"}
#: Written by mmdebstrap from the build machine; a runtime provides its own.
HOST_FILES = ("etc/hostname", "etc/resolv.conf")


class RootfsError(RuntimeError):
    """Building the root filesystem failed."""


Progress = Callable[[str], None]


def mmdebstrap(root: str, sources_list: str, packages: Dict[str, str], source_date: int,
               progress: Progress) -> None:
    """Install ``packages`` (name -> version, the whole closure) into the empty ``root``."""
    argv = ["mmdebstrap", "--mode=root", "--variant=custom", "--format=directory",
            f"--hook-dir={MERGED_USR_HOOK}", "--architectures=amd64",
            "--include=" + ",".join(f"{n}={v}" for n, v in packages.items()),
            "bookworm", root, sources_list]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(source_date), LC_ALL="C.UTF-8")
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    tail: List[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-15:]
            if line.startswith("I: "):
                progress("mmdebstrap: " + line[3:])
    except BaseException:
        proc.wait()  # Ctrl-C reaches mmdebstrap too: let it unmount before anything is deleted
        raise
    if proc.wait() != 0:
        detail = "; ".join(x[3:] for x in tail if x.startswith("E: ")) or " | ".join(tail[-3:])
        raise RootfsError(f"mmdebstrap failed: {detail}")


def installed(root: str) -> Dict[str, str]:
    """name -> version from the tree's dpkg status (before image/slim)."""
    out: Dict[str, str] = {}
    with open(os.path.join(root, "var/lib/dpkg/status"), encoding="utf-8") as f:
        for stanza in f.read().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                          if ": " in line and not line.startswith(" "))
            if fields.get("Status", "").endswith(" installed"):
                out[fields["Package"]] = fields["Version"]
    return dict(sorted(out.items()))


def add_headers(root: str, debs: List[str]) -> List[str]:
    """Unpack the header packages (no maintainer scripts, no dependencies) and move their
    trees from /usr/src to where the collector looks; returns the tree names."""
    dest = os.path.join(root, BUNDLED_ROOT.lstrip("/"))
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for deb in debs:
            _run(["dpkg-deb", "--extract", deb, tmp], f"unpacking {os.path.basename(deb)}")
        src = os.path.join(tmp, "usr", "src")
        names = sorted(n for n in os.listdir(src) if n.startswith("linux-headers-"))
        for name in names:
            os.rename(os.path.join(src, name), os.path.join(dest, name))
    return names


def slim(root: str, progress: Progress) -> None:
    """Run image/slim inside the tree (see that script for what goes and why)."""
    work = os.path.join(root, "tmp", "offwake-image")
    os.makedirs(work)
    try:
        for path in (SLIM, PACKAGES, PYTHON_MODULES):
            shutil.copy(path, work)
        inside = "/tmp/offwake-image"
        _run(["chroot", root, "/bin/sh", f"{inside}/slim", f"{inside}/packages",
              f"{inside}/python-modules"], "image/slim", env=CHROOT_ENV, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for rel in HOST_FILES:
        path = os.path.join(root, rel)
        if os.path.lexists(path):
            os.unlink(path)


def _run(argv: List[str], what: str, env: Optional[Dict[str, str]] = None,
         progress: Optional[Progress] = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    for line in proc.stderr.splitlines():
        if progress and line.startswith("slim: "):
            progress(line)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise RootfsError(f"{what} failed: {' | '.join(detail)}")


def mounts_under(path: str) -> List[str]:
    """Mount points at or below ``path`` (never delete a tree with something mounted in it)."""
    real = os.path.realpath(path)
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point == real or point.startswith(real + "/"):
                found.append(point)
    return found


def remove_tree(path: str) -> None:
    """Delete a build tree, refusing if anything is still mounted inside it."""
    if not os.path.lexists(path):
        return
    left = mounts_under(path)
    for point in sorted(left, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise RootfsError(f"{left[0]} is still mounted; unmount it and delete {path}")
    shutil.rmtree(path)
