"""Finds kernel headers BCC can compile against, in the order docs/design.md §4 gives.

The BPF program reads no kernel struct, so any reasonably recent headers do; what matters is
finding *some* tree on a node that rarely has the matching package:

1. ``/lib/modules/$(uname -r)/build`` (+ ``source``) — the host's own, often a read-only mount;
2. the ``kheaders`` module's ``/sys/kernel/kheaders.tar.xz``, unpacked into a cache dir;
3. fallback headers — the host's ``/usr/src`` packages for some other kernel, or the ones the
   collector image bundles under ``BUNDLED_ROOT`` — with the running kernel's
   ``LINUX_VERSION_CODE`` passed to BCC.

Debian splits a header package into ``linux-headers-X-amd64`` (generated files, .config) and
``linux-headers-X-common`` (the rest), joined by ``/lib/modules/X/{build,source}``.
``BCC_KERNEL_SOURCE`` names one directory, so a split tree is merged into a private tree of
symlinks in a cache directory instead of touching ``/lib/modules``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..wire.schema import HeadersInfo, HeadersSource

SRC_ROOT = "/usr/src"
#: Headers the collector image bundles (image/Dockerfile); not under /usr/src, which the node
#: pod mounts from the host and would hide them.
BUNDLED_ROOT = "/usr/share/offwake/kernel-headers"
MODULES_ROOT = "/lib/modules"
KHEADERS = "/sys/kernel/kheaders.tar.xz"


@dataclass
class Headers:
    """Which headers were chosen, and the environment BCC needs to use them."""

    source: HeadersSource
    path: str
    env: Dict[str, str] = field(default_factory=dict)
    note: str = ""

    def describe(self) -> HeadersInfo:
        out: HeadersInfo = {"source": self.source, "path": self.path}
        if self.note:
            out["note"] = self.note
        return out


def version_code(release: str) -> int:
    """LINUX_VERSION_CODE for a release string like ``6.18.44-fc-v657`` (sublevel capped)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return 0
    major, minor, sub = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    return (major << 16) + (minor << 8) + min(sub, 255)


def cache_dir() -> str:
    base = os.environ.get("OFFWAKE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "/tmp", "offwake-cache"
    )
    os.makedirs(base, exist_ok=True)
    return base


def _usable(tree: str) -> bool:
    return os.path.isdir(os.path.join(tree, "include")) and os.path.isdir(
        os.path.join(tree, "arch")
    )


def _has_generated(tree: str) -> bool:
    return os.path.isdir(os.path.join(tree, "include", "generated")) or os.path.isdir(
        os.path.join(tree, "arch", "x86", "include", "generated")
    )


def find_headers(release: Optional[str] = None, explicit: Optional[str] = None) -> Headers:
    """The first usable header tree, or raise ``LookupError`` saying what was tried."""
    release = release if release is not None else platform.release()
    code = str(version_code(release))
    if explicit:
        tree = _maybe_merge(explicit)
        return Headers("explicit", tree, {"BCC_KERNEL_SOURCE": tree,
                                          "BCC_LINUX_VERSION_CODE": code})
    host = os.path.join(MODULES_ROOT, release)
    build = os.path.join(host, "build")
    if _usable(build) or _usable(os.path.join(host, "source")):
        return Headers("host", os.path.realpath(build))
    kh = _kheaders(release)
    if kh:
        return Headers("kheaders", kh, {"BCC_KERNEL_SOURCE": kh})
    fallback, note = _fallback(release)
    if fallback:
        return Headers("fallback", fallback, {"BCC_KERNEL_SOURCE": fallback,
                                          "BCC_LINUX_VERSION_CODE": code}, note)
    raise LookupError(
        f"no kernel headers for {release}: none in {host}/build, no kheaders module, "
        f"none under {SRC_ROOT} or {BUNDLED_ROOT}; mount the host's /lib/modules and /usr/src "
        "or install "
        "linux-headers for some recent kernel"
    )


def _kheaders(release: str) -> Optional[str]:
    if not os.path.exists(KHEADERS):
        try:
            subprocess.run(["modprobe", "kheaders"], capture_output=True, timeout=10,
                           check=False)
        except (OSError, subprocess.SubprocessError):
            return None
    if not os.path.exists(KHEADERS):
        return None
    dest = os.path.join(cache_dir(), f"kheaders-{release}")
    marker = os.path.join(dest, ".complete")
    if not os.path.exists(marker):
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(KHEADERS, "r:xz") as tar:
            tar.extractall(dest)  # noqa: S202 - the kernel's own archive
        open(marker, "w").close()
    return dest


def _fallback(release: str) -> Tuple[Optional[str], str]:
    """Best tree under the fallback roots: the closest version to the running kernel (the
    newest not newer than it, else the oldest newer one), merged if Debian split it."""
    candidates: List[Tuple[int, str, str]] = []
    for root in (SRC_ROOT, BUNDLED_ROOT):
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for name in names:
            if not name.startswith("linux-headers-") or name.endswith("-common"):
                continue
            path = os.path.join(root, name)
            if os.path.isdir(path):
                candidates.append((version_code(name[len("linux-headers-"):]), name, path))
    if not candidates:
        return None, ""
    want = version_code(release)
    older = [c for c in candidates if c[0] <= want]
    _, name, path = max(older) if older else min(candidates)
    tree = _maybe_merge(path)
    if not _usable(tree):
        return None, ""
    return tree, f"headers of {name[len('linux-headers-'):]} for kernel {release}"


def _common_of(tree: str) -> Optional[str]:
    """The ``-common`` half of a Debian split tree, found by its Makefile or by name."""
    mk = os.path.join(tree, "Makefile")
    try:
        with open(mk) as f:
            text = f.read(4096)
    except OSError:
        text = ""
    m = re.search(r"include\s+(\S+/Makefile)", text)
    if m:
        cand = os.path.dirname(m.group(1))
        if not os.path.isabs(cand):
            cand = os.path.normpath(os.path.join(tree, cand))
        if os.path.isdir(cand):
            return cand
    base = re.sub(r"-[a-z0-9_]+$", "-common", os.path.basename(tree.rstrip("/")))
    cand = os.path.join(os.path.dirname(tree.rstrip("/")), base)
    if cand != tree and os.path.isdir(cand):
        return cand
    return None


def _maybe_merge(tree: str) -> str:
    """A single directory BCC can use; merges a Debian split tree into the cache if needed."""
    tree = os.path.realpath(tree)
    common = _common_of(tree)
    if common is None or (_usable(tree) and not _has_generated(tree)):
        return tree
    if _usable(tree) and os.path.isdir(os.path.join(tree, "include", "linux")):
        return tree  # already complete
    dest = os.path.join(cache_dir(), "headers-" + os.path.basename(tree))
    marker = os.path.join(dest, ".complete")
    if os.path.exists(marker):
        return dest
    # Build beside the destination and rename, so concurrent collectors never see half a tree.
    tmp = f"{dest}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _merge(common, tree, tmp)
    open(os.path.join(tmp, ".complete"), "w").close()
    try:
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another collector won the race
    return dest


def _merge(low: str, high: str, dest: str) -> None:
    """Overlay ``high`` on ``low`` as symlinks, recursing only where both have a directory."""
    os.makedirs(dest, exist_ok=True)
    entries: Dict[str, str] = {}
    for base in (low, high):
        try:
            for name in os.listdir(base):
                entries.setdefault(name, base)
        except OSError:
            continue
    for name in entries:
        lp, hp = os.path.join(low, name), os.path.join(high, name)
        out = os.path.join(dest, name)
        if os.path.lexists(out):
            continue
        l_dir = os.path.isdir(lp) and not os.path.islink(lp)
        h_dir = os.path.isdir(hp) and not os.path.islink(hp)
        if l_dir and h_dir:
            _merge(lp, hp, out)
        elif os.path.lexists(hp):
            os.symlink(os.path.realpath(hp), out)
        else:
            os.symlink(os.path.realpath(lp), out)
