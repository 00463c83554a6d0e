"""Unpacks an OCI image archive the way a container runtime does, and runs commands in it.

Unpacking: the manifest's layers in order, by the lab's unpacker (whiteouts honoured; owners,
modes, times and file capabilities kept; nothing written outside the root). Running: a private mount
namespace with the root filesystem bind-mounted read-only, fresh /proc (in the host's PID
namespace, as a ``hostPID`` pod sees it), sysfs with tracefs on /sys/kernel/tracing, the
host's /dev (privileged) and a tmpfs on /tmp (the pod's emptyDir), then ``chroot``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The lab's layer unpacker, run as a helper process chrooted into the new root.
UNPACK = Path(__file__).resolve().parents[1] / "lab" / "unpack.py"

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
    """Apply the image's layers to ``dest`` in order; returns the image config.

    The layers go through the lab's unpacker (tests/lab/unpack.py, the one the lab's
    kubelet pulls with), chrooted into ``dest``: one set of whiteout and ownership rules
    for every image a test runs.
    """
    manifest, config, _ = read_archive(archive)
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="offwake-img-layers-") as blobs, \
            tarfile.open(archive) as outer:
        layers = []
        for i, layer in enumerate(manifest["layers"]):
            path = os.path.join(blobs, f"layer-{i}")
            with open(path, "wb") as out:
                shutil.copyfileobj(_member(outer, _blob_name(layer["digest"])), out)
            layers.append(path)
        proc = subprocess.run([sys.executable, "-S", str(UNPACK), dest, *layers],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"unpacking {archive} failed: {proc.stderr.strip()}")
    return config


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
