"""Image pulls as containerd does them: registry API v2, a content store, unpacked roots.

`Reference` parses an image reference the way the container runtime normalizes it;
`ImageStore.pull` resolves the tag to a manifest (OCI image index / manifest, Docker v2
schema2 manifest list / manifest; linux/amd64 from an index), fetches the config and the
layers into a content store (`<state>/images/blobs/sha256/<hex>`, each verified against
its digest and size), and unpacks the layers in order, with whiteouts, into
`<state>/images/<manifest hex>/rootfs`, once per manifest digest. Errors carry
containerd's wording, which the kubelet puts into ErrImagePull statuses and events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

UNPACK = Path(__file__).with_name("unpack.py")

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar",
               "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.docker.image.rootfs.diff.tar")
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
PLATFORM = ("linux", "amd64")
#: The lab's registry is on 127.0.0.1: never through an HTTP proxy from the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Reference:
    """`host/repository:tag` or `host/repository@sha256:…`, normalized like containerd."""

    host: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, image: str) -> Reference:
        name, digest = (image.split("@", 1) + [""])[:2]
        tag = ""
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, repo = first, rest
        else:
            host, repo = "docker.io", name
            if "/" not in repo:
                repo = "library/" + repo
        if not tag and not digest:
            tag = "latest"
        return cls(host, repo, tag, digest)

    def __str__(self) -> str:
        out = f"{self.host}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def name(self) -> str:
        """What the image's reference resolves at the registry: the digest, else the tag."""
        return self.digest or self.tag


class PullError(Exception):
    """A pull failed; `message` is containerd's text, `code` the CRI (gRPC) status code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def cri(self) -> str:
        """The error as kubelet shows it: `rpc error: code = NotFound desc = …`."""
        return f"rpc error: code = {self.code} desc = {self.message}"


@dataclass
class Image:
    """An image pulled and unpacked on this machine."""

    reference: str
    digest: str  # of the manifest: the image's identity
    config: Dict[str, Any]
    rootfs: Path
    size: int  # bytes of config + layers, as the registry stores them

    @property
    def image_id(self) -> str:
        """`host/repo@sha256:…`, what kubelet reports as a container's imageID."""
        ref = Reference.parse(self.reference)
        return f"{ref.host}/{ref.repository}@{self.digest}"


@dataclass
class _Blob:
    digest: str
    size: int
    media_type: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


class Registry:
    """HTTP API v2 client for one plain-HTTP registry (the lab's, on 127.0.0.1)."""

    def __init__(self, host: str, timeout: float = 30.0) -> None:
        self.base = f"http://{host}/v2"
        self.timeout = timeout

    def _open(self, url: str, accept: str = "") -> Any:
        req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        return DIRECT.open(req, timeout=self.timeout)

    def manifest(self, ref: Reference, name: str) -> Tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, by tag or digest."""
        url = f"{self.base}/{ref.repository}/manifests/{name}"
        try:
            with self._open(url, ACCEPT) as resp:
                body = resp.read()
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise PullError("NotFound", f'failed to pull and unpack image "{ref}": failed '
                                f'to resolve reference "{ref}": {ref}: not found') from exc
            raise PullError("Unknown", f'failed to pull and unpack image "{ref}": failed to '
                            f'resolve reference "{ref}": unexpected status from GET request '
                            f"to {url}: {exc.code} {exc.reason}") from exc
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PullError("Unknown", f'failed to pull and unpack image "{ref}": failed to '
                            f'resolve reference "{ref}": failed to do request: Head "{url}": '
                            f"{reason}") from exc
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if name.startswith("sha256:") and name != digest:
            raise PullError("Unknown", f'failed to pull and unpack image "{ref}": content '
                            f"digest {digest} does not match {name}")
        if not ctype:
            ctype = str(json.loads(body).get("mediaType", ""))
        return body, ctype, digest

    def blob(self, ref: Reference, blob: _Blob, dest: Path) -> None:
        """Download a blob to dest, verifying its size and sha256 on the way."""
        url = f"{self.base}/{ref.repository}/blobs/{blob.digest}"
        tmp = dest.with_name(dest.name + f".{secrets.token_hex(4)}.part")
        h = hashlib.sha256()
        size = 0
        try:
            with self._open(url) as resp, tmp.open("wb") as out:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except (OSError, urllib.error.URLError) as exc:
            tmp.unlink(missing_ok=True)
            prefix = f'failed to pull and unpack image "{ref}": failed to copy: '
            if getattr(exc, "code", 0) == 404:
                raise PullError("NotFound", prefix + f"httpReadSeeker: failed open: content at "
                                f"{url} not found: not found") from exc
            raise PullError("Unknown", prefix + str(getattr(exc, "reason", exc))) from exc
        got = "sha256:" + h.hexdigest()
        if got != blob.digest or size != blob.size:
            tmp.unlink(missing_ok=True)
            raise PullError("Unknown", f'failed to pull and unpack image "{ref}": failed to '
                            f"copy: unexpected commit digest {got}, expected {blob.digest}: "
                            "failed precondition")
        os.replace(tmp, dest)


class ImageStore:
    """The images of one lab: content store plus unpacked roots, shared by its nodes."""

    def __init__(self, root: Path, log: Callable[[str], None],
                 track_pid: Callable[[int], None]) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.log = log
        self.track_pid = track_pid
        self.lock = threading.Lock()
        self.unpack_locks: Dict[str, threading.Lock] = {}

    def pull(self, image: str) -> Image:
        """Resolve, fetch and unpack `image` (a reference on a plain-HTTP registry)."""
        ref = Reference.parse(image)
        registry = Registry(ref.host)
        body, ctype, digest = registry.manifest(ref, ref.name)
        if ctype in INDEX_TYPES:
            body, ctype, digest = registry.manifest(ref, self._platform(ref, body))
        if ctype not in MANIFEST_TYPES:
            raise PullError("Unknown", f'failed to pull and unpack image "{ref}": '
                            f"unsupported media type {ctype or 'unknown'}")
        manifest = json.loads(body)
        config_desc = _Blob(manifest["config"]["digest"], int(manifest["config"]["size"]))
        layers = [_Blob(x["digest"], int(x["size"]), x.get("mediaType", ""))
                  for x in manifest.get("layers") or []]
        for layer in layers:
            if layer.media_type not in LAYER_TYPES:
                raise PullError("Unknown", f'failed to pull and unpack image "{ref}": '
                                f"unsupported layer media type {layer.media_type}")
        self.blobs.mkdir(parents=True, exist_ok=True)
        for blob in [config_desc, *layers]:
            path = self.blobs / blob.digest.split(":", 1)[1]
            if not path.exists():
                registry.blob(ref, blob, path)
        config = json.loads((self.blobs / config_desc.digest.split(":", 1)[1]).read_bytes())
        rootfs = self._unpack(ref, digest, layers)
        size = config_desc.size + sum(x.size for x in layers)
        return Image(image, digest, config, rootfs, size)

    def _platform(self, ref: Reference, body: bytes) -> str:
        for m in json.loads(body).get("manifests") or []:
            plat = m.get("platform") or {}
            if (plat.get("os"), plat.get("architecture")) == PLATFORM:
                return str(m["digest"])
        raise PullError("NotFound", f'failed to pull and unpack image "{ref}": no match for '
                        "platform in manifest: not found")

    def _unpack(self, ref: Reference, digest: str, layers: List[_Blob]) -> Path:
        """`<root>/<manifest hex>/rootfs`, unpacked once (concurrent pulls wait for it)."""
        hexdigest = digest.split(":", 1)[1]
        with self.lock:
            lock = self.unpack_locks.setdefault(hexdigest, threading.Lock())
        final = self.root / hexdigest
        with lock:
            if (final / "rootfs").is_dir():
                return final / "rootfs"
            tmp = self.root / f"tmp-{hexdigest[:12]}-{secrets.token_hex(4)}"
            (tmp / "rootfs").mkdir(parents=True)
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-S", str(UNPACK), str(tmp / "rootfs")] +
                [str(self.blobs / x.digest.split(":", 1)[1]) for x in layers],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.track_pid(proc.pid)
            _, err = proc.communicate()
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise PullError("Unknown", f'failed to pull and unpack image "{ref}": failed to '
                                f"extract layer: {err.decode(errors='replace').strip()}")
            with contextlib.suppress(OSError):
                os.rename(tmp, final)
            shutil.rmtree(tmp, ignore_errors=True)
            self.log(f"unpacked {ref} ({digest}) in {time.monotonic() - started:.1f}s")
            return final / "rootfs"
