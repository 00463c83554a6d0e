"""Apply image layers to a root filesystem, inside a chroot of it (run as a helper process).

usage: python3 -S unpack.py ROOTFS LAYER [LAYER ...]     (gzip or plain tar, in order)

Each layer is read twice: first its whiteouts (`.wh.NAME` removes NAME, `.wh..wh..opq`
empties the directory) are applied to what the layers below left, then its entries are
extracted over them, replacing whatever was at each path. Running chrooted into the
rootfs is what keeps a layer inside it: absolute symlinks and `..` in the archive resolve
against the image's root, never the host's, as containerd's applier guarantees. Owners,
modes (setuid included), device nodes, hard links and `security.capability` xattrs are
kept, as a container runtime keeps them. Exit status 1 with one line on stderr on error.
"""

from __future__ import annotations

import gzip  # noqa: F401  (imported before chroot: tarfile needs it inside)
import os
import shutil
import sys
import tarfile
import zlib  # noqa: F401

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


def _whiteouts(fileobj: object) -> None:
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:  # type: ignore[call-overload]
        for member in tar:
            path = _normal(member.name)
            base = os.path.basename(path)
            parent = os.path.dirname(path)
            if base == OPAQUE:
                if os.path.isdir(parent) and not os.path.islink(parent):
                    for entry in os.listdir(parent):
                        _remove(os.path.join(parent, entry))
            elif base.startswith(WHITEOUT):
                _remove(os.path.join(parent, base[len(WHITEOUT):]))


def _extract(fileobj: object) -> None:
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:  # type: ignore[call-overload]
        for member in tar:
            path = _normal(member.name)
            if os.path.basename(path).startswith(WHITEOUT) or path == "/":
                continue
            if os.path.lexists(path) and not (
                    member.isdir() and os.path.isdir(path) and not os.path.islink(path)):
                _remove(path)
            member.name = path.lstrip("/")
            tar.extract(member, "/", numeric_owner=True, **FILTER)
            for key, value in member.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    try:
                        os.setxattr(path, key[len("SCHILY.xattr."):],
                                    value.encode("utf-8", "surrogateescape"),
                                    follow_symlinks=False)
                    except OSError:
                        pass  # a filesystem without that xattr namespace


def main(argv: list) -> int:
    rootfs, layers = argv[1], argv[2:]
    files = [open(p, "rb") for p in layers]  # noqa: SIM115  (opened before the chroot)
    os.chroot(rootfs)
    os.chdir("/")
    try:
        for f in files:
            _whiteouts(f)
            f.seek(0)
            _extract(f)
            f.close()
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        print(f"applying layer failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
