"""Apply image layers to a root filesystem, inside a chroot of it (run as a helper process).

usage: python3 -S unpack.py ROOTFS LAYER [LAYER ...]     (gzip or plain tar, in order)

Each layer is read once, in order: its whiteouts (`.wh.NAME` removes NAME, `.wh..wh..opq`
empties the directory) remove what the layers below left (never what this layer wrote),
its other entries are extracted over them, replacing whatever was at each path.

Running chrooted into the rootfs is what keeps a layer inside it: absolute symlinks and
`..` in the archive resolve against the image's root, never the host's, as containerd's
applier guarantees. Owners, modes (setuid included), times, device nodes, hard links and
`security.capability` xattrs are kept, as a container runtime keeps them. Exit status 1
with one line on stderr on error.
"""

from __future__ import annotations

import gzip  # noqa: F401  (imported before chroot: tarfile needs it inside)
import os
import shutil
import sys
import tarfile
import zlib
from typing import List, Set, Tuple

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
FILTER = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _normal(name: str) -> str:
    """An archive path as an absolute path inside the (chrooted) rootfs."""
    return "/" + os.path.normpath("/" + name).lstrip("/")


def _clear(folder: str, written: Set[str]) -> None:
    """An opaque directory: drop what lower layers left below it (not what this one wrote)."""
    if not os.path.isdir(folder) or os.path.islink(folder):
        return
    for top, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(top, name)
            if path not in written:
                os.unlink(path)
        for name in dirs:
            path = os.path.join(top, name)
            if path in written:
                continue
            if os.path.islink(path):
                os.unlink(path)
            else:
                try:
                    os.rmdir(path)  # kept if this layer wrote something below it
                except OSError:
                    pass


def _apply(fileobj: object) -> None:
    """One pass over a layer: whiteouts hide lower layers' entries, others are written.

    Times are the archive's, as containerd's applier sets them: a directory's once the
    layer is done (writing below it moves its mtime), a symbolic link's on the link itself.
    """
    written: Set[str] = set()
    times: List[Tuple[str, int]] = []
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:  # type: ignore[call-overload]
        for member in tar:
            path = _normal(member.name)
            base = os.path.basename(path)
            parent = os.path.dirname(path)
            if base == OPAQUE:
                _clear(parent, written)
                continue
            if base.startswith(WHITEOUT):
                hidden = os.path.join(parent, base[len(WHITEOUT):])
                if hidden not in written:
                    _remove(hidden)
                continue
            if path == "/":
                continue
            if os.path.lexists(path) and not (
                    member.isdir() and os.path.isdir(path) and not os.path.islink(path)):
                _remove(path)
            member.name = path.lstrip("/")
            tar.extract(member, "/", numeric_owner=True, **FILTER)
            written.add(path)
            if member.isdir() or member.issym():
                times.append((path, member.mtime))
            for key, value in member.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    try:
                        os.setxattr(path, key[len("SCHILY.xattr."):],
                                    value.encode("utf-8", "surrogateescape"),
                                    follow_symlinks=False)
                    except OSError:
                        pass  # a filesystem without that xattr namespace
    for path, mtime in sorted(times, reverse=True):  # children before their parents
        if os.path.lexists(path):
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def main(argv: list) -> int:
    rootfs, layers = argv[1], argv[2:]
    files = [open(p, "rb") for p in layers]  # noqa: SIM115  (opened before the chroot)
    os.chroot(rootfs)
    os.chdir("/")
    try:
        for f in files:
            _apply(f)
            f.close()
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        print(f"applying layer failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
