"""Small OCI images for tests, built from Debian's static busybox and pushed with skopeo.

    layout = build_image(tmp, layers=[busybox_layer(), {"etc/motd": b"hi\\n"}],
                         config={"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["cat /etc/motd"]})
    push(layout, f"{lab.registry}/lab-test/busybox:1")

A layer is a dict of path -> bytes (a file), None (a directory), ("symlink", target) or
("whiteout",) / ("opaque",) for the OCI whiteout markers. The layout is written by these
few lines (gzip layers, an image config, a manifest and an index), not by image/build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

BUSYBOX = Path("/bin/busybox")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
Entry = Union[bytes, None, Tuple[str, ...]]
Layer = Dict[str, Entry]


def busybox_layer() -> Layer:
    """A root filesystem of the static busybox with its applets linked in /bin."""
    if not BUSYBOX.exists():
        raise RuntimeError("/bin/busybox is missing; tests/bootstrap installs busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    layer: Layer = {d: None for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var")}
    layer["bin/busybox"] = BUSYBOX.read_bytes()
    for applet in applets:
        if applet != "busybox":
            layer[f"bin/{applet}"] = ("symlink", "busybox")
    layer["etc/passwd"] = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    layer["etc/group"] = b"root:x:0:\nnogroup:x:65534:\n"
    return layer


def _tar(layer: Layer) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in layer:  # in the order given: whiteouts may come after entries
            entry = layer[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            data: Optional[bytes] = None
            if entry is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                if path == "tmp":
                    info.mode = 0o1777
            elif isinstance(entry, bytes):
                info.size, info.mode, data = len(entry), 0o755, entry
            elif entry[0] == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry[1]
            elif entry[0] == "opaque":  # the directory `path` hides what lower layers had
                info = tarfile.TarInfo(f"{path}/.wh..wh..opq")
                info.mtime = 0
            elif entry[0] == "whiteout":  # `path` is removed
                parent, _, base = path.rpartition("/")
                info = tarfile.TarInfo(f"{parent}/.wh.{base}" if parent else f".wh.{base}")
                info.mtime = 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _blob(root: Path, data: bytes) -> Dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _manifest(root: Path, layers: List[Layer], config: Dict[str, Any],
              arch: str = "amd64") -> Dict[str, Any]:
    """Write layers, image config and manifest blobs; the manifest's descriptor."""
    descs, diff_ids = [], []
    for layer in layers:
        raw = _tar(layer)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        desc = _blob(root, gzip.compress(raw, mtime=0))
        desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        descs.append(desc)
    image_config = {"architecture": arch, "os": "linux", "config": config,
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cfg = _blob(root, json.dumps(image_config).encode())
    cfg["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": cfg, "layers": descs}
    man = _blob(root, json.dumps(manifest).encode())
    man.update({"mediaType": MANIFEST, "platform": {"architecture": arch, "os": "linux"}})
    return man


def _layout(root: Path, desc: Dict[str, Any], tag: str) -> Path:
    desc = dict(desc, annotations={"org.opencontainers.image.ref.name": tag})
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return root


def build_image(root: Path, layers: List[Layer], config: Dict[str, Any],
                tag: str = "latest") -> Path:
    """An OCI image layout at root (one tag) with these layers and image config."""
    root.mkdir(parents=True, exist_ok=True)
    return _layout(root, _manifest(root, layers, config), tag)


def build_index(root: Path, platforms: Dict[str, Tuple[List[Layer], Dict[str, Any]]],
                tag: str = "latest") -> Path:
    """An OCI layout whose tag is an image index with one image per architecture."""
    root.mkdir(parents=True, exist_ok=True)
    manifests = [_manifest(root, layers, config, arch)
                 for arch, (layers, config) in platforms.items()]
    index = _blob(root, json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                                    "manifests": manifests}).encode())
    index["mediaType"] = INDEX
    return _layout(root, index, tag)


def push(layout: Path, reference: str, tag: str = "latest", fmt: str = "oci") -> None:
    """skopeo copy (every platform of an index) to a plain-HTTP registry.

    `fmt` "v2s2" converts to Docker's schema2 manifest (single images only).
    """
    cmd = ["skopeo", "copy", "-q", "--all", "--dest-tls-verify=false"]
    if fmt == "v2s2":
        cmd += ["--format", "v2s2"]
    subprocess.run(cmd + [f"oci:{layout}:{tag}", f"docker://{reference}"], check=True,
                   capture_output=True, timeout=120)
