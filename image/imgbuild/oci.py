"""A small deterministic OCI image writer: one layer from a directory, then an oci-archive.

Deterministic so that the same root filesystem always gives the same digest: entries
sorted by path, numeric owners only, mtimes clamped to the source date, gzip without a
name or timestamp, JSON with sorted keys. umoci and skopeo both stamp build times, hence
this writer.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, Dict, List, Optional, Tuple

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"

#: Directories a runtime mounts over: kept, but empty.
EMPTIED = ("dev", "proc", "sys", "run", "tmp")
#: 9 packs this image 0.7 % smaller in four times the time.
GZIP_LEVEL = 6
LARGEST = 10
_CHUNK = 1 << 20


@dataclass
class Layer:
    """A written layer blob and what the image's config and the build report need."""

    path: str
    digest: str  # sha256 of the gzip blob: the layer's name in the manifest
    size: int
    diff_id: str  # sha256 of the uncompressed tar: the layer's name in the config
    uncompressed_size: int
    largest: List[Tuple[int, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"digest": self.digest, "size": self.size, "diff_id": self.diff_id,
                "uncompressed_size": self.uncompressed_size,
                "largest": [[size, path] for size, path in self.largest]}

    @classmethod
    def from_json(cls, path: str, data: dict) -> Layer:
        return cls(path, data["digest"], data["size"], data["diff_id"],
                   data["uncompressed_size"], [(s, p) for s, p in data["largest"]])


@dataclass
class Image:
    """An assembled image; its manifest digest is the one registries and pods use."""

    digest: str
    manifest: bytes
    config: bytes
    layer: Layer


class _Hashing(io.RawIOBase):
    """Counts and hashes everything written through it to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        self.out.write(view)
        return len(view)


def _paths(root: str) -> List[str]:
    """Every path under ``root``, relative and sorted by its bytes (so a directory comes
    before what it holds); what lives in EMPTIED directories is left out."""
    out: List[str] = []
    for top, dirs, files in os.walk(root):
        rel = os.path.relpath(top, root)
        if rel in EMPTIED:
            dirs[:] = []
            continue
        for name in dirs + files:
            out.append(name if rel == "." else f"{rel}/{name}")
    out.sort(key=os.fsencode)
    return out


def _tarinfo(root: str, rel: str, clamp: int, links: Dict[Tuple[int, int], str]) -> tarfile.TarInfo:
    full = os.path.join(root, rel)
    st = os.lstat(full)
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = min(int(st.st_mtime), clamp)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
    elif stat.S_ISREG(st.st_mode):
        inode = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and inode in links:
            info.type = tarfile.LNKTYPE
            info.linkname = links[inode]
        else:
            if st.st_nlink > 1:
                links[inode] = rel
            info.size = st.st_size
    else:
        raise ValueError(f"{full} is neither a file, a directory nor a link; "
                         "the image cannot carry it")
    return info


def write_layer(root: str, out_path: str, clamp: int) -> Layer:
    """The root filesystem at ``root`` as one gzip layer at ``out_path``; mtimes newer than
    ``clamp`` (SOURCE_DATE_EPOCH) are set to it."""
    links: Dict[Tuple[int, int], str] = {}
    largest: List[Tuple[int, str]] = []
    with open(out_path, "wb") as raw:
        packed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL,
                           fileobj=packed, mtime=0) as gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in _paths(root):
                    info = _tarinfo(root, rel, clamp, links)
                    if info.isreg():
                        heapq.heappush(largest, (info.size, "/" + rel))
                        if len(largest) > LARGEST:
                            heapq.heappop(largest)
                        with open(os.path.join(root, rel), "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    return Layer(out_path, "sha256:" + packed.sha.hexdigest(), packed.size,
                 "sha256:" + plain.sha.hexdigest(), plain.size,
                 sorted(largest, reverse=True))


def file_digest(path: str) -> str:
    """``sha256:...`` of a file's bytes, or "" if it cannot be read."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                sha.update(chunk)
    except OSError:
        return ""
    return "sha256:" + sha.hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assemble(layer: Layer, *, created: str, entrypoint: List[str], env: List[str],
             labels: Dict[str, str], history: str) -> Image:
    """Config and manifest for a linux/amd64 image of the one ``layer``."""
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Entrypoint": entrypoint, "Env": env, "Labels": labels,
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": created, "created_by": history}],
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config),
                   "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size}],
        "annotations": {"org.opencontainers.image.created": created},
    })
    return Image(digest_of(manifest), manifest, config, layer)


def write_archive(image: Image, out_path: str, *, mtime: int,
                  ref_name: Optional[str] = None) -> int:
    """The image as an oci-archive (an OCI image layout in a tar) at ``out_path``, written
    beside it first and renamed, so a reader never sees half an archive. Returns its size."""
    descriptor: Dict[str, object] = {"mediaType": MANIFEST_TYPE, "digest": image.digest,
                                     "size": len(image.manifest),
                                     "platform": {"architecture": "amd64", "os": "linux"}}
    if ref_name:
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    index = canonical_json({"schemaVersion": 2, "mediaType": INDEX_TYPE,
                            "manifests": [descriptor]})
    small = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
        _blob(image.config): image.config,
        _blob(image.manifest): image.manifest,
    }
    entries = sorted([*small, _blob_name(image.layer.digest)])
    tmp = f"{out_path}.tmp{os.getpid()}"
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for directory in ("blobs", "blobs/sha256"):
                tar.addfile(_entry(directory, tarfile.DIRTYPE, 0o755, mtime))
            for name in entries:
                if name in small:
                    data = small[name]
                    tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, mtime, len(data)),
                                io.BytesIO(data))
                else:
                    with open(image.layer.path, "rb") as f:
                        tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, mtime,
                                           image.layer.size), f)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return os.path.getsize(out_path)


def _blob(data: bytes) -> str:
    return _blob_name(digest_of(data))


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _entry(name: str, kind: bytes, mode: int, mtime: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, mtime, size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
