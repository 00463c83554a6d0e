"""Unpacks an OCI image archive the way a container runtime does, and runs commands in it.

Unpacking: the manifest's layers in order, whiteouts honoured, owners, modes and mtimes
(symbolic links' too) kept. Running: a private mount namespace with the root filesystem
bind-mounted read-only, fresh /proc (in the host's PID namespace, as a ``hostPID`` pod
sees it), sysfs with tracefs on /sys/kernel/tracing, the host's /dev (privileged) and a
tmpfs on /tmp (the pod's emptyDir), then ``chroot``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from typing import Dict, List, Optional, Tuple

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_RUN = r"""
set -eu
root=$1 stage=$2
shift 2
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tracefs tracefs "$root/sys/kernel/tracing"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
cp -a "$stage/." "$root/tmp/"
mount -o remount,bind,ro "$root"
exec chroot "$root" "$@"
"""


def read_archive(path: str) -> Tuple[dict, dict, Dict[str, bytes]]:
    """(manifest, config, blobs by digest) of an oci-archive with one image in it."""
    blobs: Dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        index = json.load(_member(tar, "index.json"))
        (descriptor,) = index["manifests"]
        manifest_bytes = _member(tar, _blob_name(descriptor["digest"])).read()
        manifest = json.loads(manifest_bytes)
        config_bytes = _member(tar, _blob_name(manifest["config"]["digest"])).read()
        blobs[descriptor["digest"]] = manifest_bytes
        blobs[manifest["config"]["digest"]] = config_bytes
    return manifest, json.loads(config_bytes), blobs


def _member(tar: tarfile.TarFile, name: str):  # type: ignore[no-untyped-def]
    f = tar.extractfile(name)
    if f is None:
        raise ValueError(f"{name} is not a file in the archive")
    return f


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def unpack(archive: str, dest: str) -> dict:
    """Apply the image's layers to ``dest`` in order; returns the image config."""
    manifest, config, _ = read_archive(archive)
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(archive) as outer:
        for layer in manifest["layers"]:
            blob = outer.extractfile(_blob_name(layer["digest"]))
            assert blob is not None
            with tarfile.open(fileobj=blob, mode="r|*") as tar:
                _apply(tar, dest)
    return config


def _apply(tar: tarfile.TarFile, dest: str) -> None:
    links: List[Tuple[str, int]] = []
    dirs: List[tarfile.TarInfo] = []
    for member in tar:
        parent, base = os.path.split(member.name)
        target = os.path.join(dest, member.name)
        if base == OPAQUE:
            for name in os.listdir(os.path.join(dest, parent)):
                _remove(os.path.join(dest, parent, name))
            continue
        if base.startswith(WHITEOUT):
            _remove(os.path.join(dest, parent, base[len(WHITEOUT):]))
            continue
        if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target)):
            _remove(target)
        tar.extract(member, dest, set_attrs=not member.isdir(), numeric_owner=True,
                    filter="fully_trusted")
        if member.isdir():
            dirs.append(member)
        elif member.issym():
            links.append((target, member.mtime))
    for target, mtime in links:
        os.utime(target, (mtime, mtime), follow_symlinks=False)
    for member in sorted(dirs, key=lambda m: m.name, reverse=True):
        target = os.path.join(dest, member.name)
        os.chown(target, member.uid, member.gid)
        os.chmod(target, member.mode)
        os.utime(target, (member.mtime, member.mtime))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def run_in_image(root: str, argv: List[str], *, files: Optional[Dict[str, bytes]] = None,
                 env: Optional[Dict[str, str]] = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``argv`` inside the unpacked image at ``root``; ``files`` (name -> bytes) are
    put in its /tmp first."""
    with tempfile.TemporaryDirectory(prefix="offwake-img-stage-") as stage:
        for name, data in (files or {}).items():
            with open(os.path.join(stage, name), "wb") as f:
                f.write(data)
        full_env = {"PATH": IMAGE_PATH, "LC_ALL": "C.UTF-8", **(env or {})}
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _RUN, "sh",
             root, stage, *argv],
            capture_output=True, text=True, env=full_env, timeout=timeout, check=False)


def image_python(root: str, code: str, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """The image's /usr/bin/python3 running ``code``."""
    return run_in_image(root, ["/usr/bin/python3", "-c", code], **kwargs)
