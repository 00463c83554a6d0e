"""krew's rules for a plugin manifest, and krew's install steps, written down for the tests.

Read from krew's own code (kubernetes-sigs/krew: internal/index/validation/validate.go,
cmd/validate-krew-manifest, internal/installation/{install,move}.go), not copied from it:
the structural checks krew runs before installing, the checks its index CI adds (every
platform matches a supported os/arch, no two platforms match the same one, a licence file
is installed), and the install itself (verify the sha256, unpack, apply `files`, move to
store/NAME/VERSION, symlink `bin` as bin/kubectl-NAME).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import posixpath
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
KIND = "Plugin"
SAFE_NAME = re.compile(r"^[\w-]+$")
SHA256 = re.compile(r"^[a-f0-9]{64}$")
WINDOWS_FORBIDDEN = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
# k8s.io/apimachinery/pkg/util/version.ParseSemantic, behind krew's "must start with v"
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
PLATFORMS = [("windows", "386"), ("windows", "amd64"), ("windows", "arm64"),
             ("linux", "386"), ("linux", "amd64"), ("linux", "arm"), ("linux", "arm64"),
             ("linux", "ppc64le"), ("darwin", "386"), ("darwin", "amd64"), ("darwin", "arm64")]
LICENSE_NAMES = {"license", "license.txt", "license.md", "licenses", "licenses.txt",
                 "licenses.md", "copying", "copying.txt"}


class Invalid(Exception):
    """The manifest breaks one of krew's rules (the message says which)."""


def load(path: Path) -> Dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise Invalid(f"{path.name} is not a YAML mapping")
    return data


def validate_file(path: Path) -> Dict[str, Any]:
    """What `validate-krew-manifest -skip-install` checks: file name, structure, platforms."""
    if path.suffix != ".yaml":
        raise Invalid(f"expected manifest extension '.yaml' but found {path.suffix!r}")
    manifest = load(path)
    validate(path.stem, manifest)
    platforms = manifest["spec"]["platforms"]
    for i, entry in enumerate(platforms):
        if not any(matches(entry["selector"], os_, arch) for os_, arch in PLATFORMS):
            raise Invalid(f"spec.platform[{i}]'s selector doesn't match any supported platform")
    for os_, arch in PLATFORMS:
        hits = [i for i, p in enumerate(platforms) if matches(p["selector"], os_, arch)]
        if len(hits) > 1:
            raise Invalid(f"spec.platforms {hits} have overlapping selectors for {os_}/{arch}")
    return manifest


def validate(name: str, manifest: Dict[str, Any]) -> None:
    """krew's ValidatePlugin: the structural rules, in krew's order."""
    if manifest.get("apiVersion") != API_VERSION:
        raise Invalid(f"apiVersion={manifest.get('apiVersion')!r} is not supported")
    if manifest.get("kind") != KIND:
        raise Invalid(f"kind={manifest.get('kind')!r}, but only {KIND!r} is supported")
    if not SAFE_NAME.match(name) or name.upper() in WINDOWS_FORBIDDEN:
        raise Invalid(f"the plugin name {name!r} is not allowed")
    if (manifest.get("metadata") or {}).get("name") != name:
        raise Invalid(f"plugin should be named {name!r}")
    spec = manifest.get("spec") or {}
    short = spec.get("shortDescription") or ""
    if not short:
        raise Invalid("should have a short description")
    if "\r" in short or "\n" in short:
        raise Invalid("should not have line breaks in short description")
    if not spec.get("platforms"):
        raise Invalid("should have a platform specified")
    if not spec.get("version"):
        raise Invalid("should have a version specified")
    if not SEMVER.match(str(spec["version"])):
        raise Invalid(f"failed to parse plugin version {spec['version']!r}")
    for entry in spec["platforms"]:
        _validate_platform(entry)


def _validate_platform(entry: Dict[str, Any]) -> None:
    if not entry.get("uri"):
        raise Invalid("`uri` has to be set")
    if not entry.get("sha256"):
        raise Invalid("`sha256` sum has to be set")
    if not SHA256.match(str(entry["sha256"])):
        raise Invalid(f"`sha256` value {entry['sha256']} is not valid")
    if not entry.get("bin"):
        raise Invalid("`bin` has to be set")
    files = entry.get("files")
    if files is not None:
        if len(files) == 0:
            raise Invalid("`files` has to be unspecified or non-empty")
        for op in files:
            if not op.get("from"):
                raise Invalid("`from` field has to be set")
            if not op.get("to"):
                raise Invalid("`to` field has to be set")
    _validate_selector(entry.get("selector"))


def _validate_selector(selector: Optional[Dict[str, Any]]) -> None:
    if selector is None:
        raise Invalid("nil selector is not supported")
    labels, expressions = selector.get("matchLabels"), selector.get("matchExpressions")
    if labels is None and not expressions:
        raise Invalid("empty selector is not supported")
    keys = list(labels or {}) + [e.get("key") for e in expressions or []]
    for key in keys:
        if key not in ("os", "arch"):
            raise Invalid(f"key {key!r} not supported")
    if labels is not None and len(labels) == 0:
        raise Invalid("`matchLabels` specified but empty")
    if expressions is not None and len(expressions) == 0:
        raise Invalid("`matchExpressions` specified but empty")


def matches(selector: Dict[str, Any], os_: str, arch: str) -> bool:
    """A metav1.LabelSelector against the labels {os, arch}."""
    labels = {"os": os_, "arch": arch}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present, values = expr["key"] in labels, expr.get("values") or []
        operator = expr["operator"]
        if operator == "In" and labels.get(expr["key"]) not in values:
            return False
        if operator == "NotIn" and labels.get(expr["key"]) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def this_platform() -> Tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386"}.get(machine, machine)
    return platform.system().lower(), arch


def install(manifest_path: Path, root: Path, archive: Optional[Path] = None) -> Path:
    """``kubectl krew install --manifest PATH [--archive FILE]`` into KREW_ROOT=root.

    Returns the installed plugin's directory. Raises Invalid when krew would refuse.
    """
    manifest = validate_file(manifest_path)
    name, version = manifest["metadata"]["name"], manifest["spec"]["version"]
    here = this_platform()
    candidates = [p for p in manifest["spec"]["platforms"] if matches(p["selector"], *here)]
    if not candidates:
        raise Invalid(f"plugin {name!r} does not offer installation for {here}")
    entry = candidates[0]
    data = archive.read_bytes() if archive else _fetch(entry["uri"])
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise Invalid("checksum does not match")
    with tempfile.TemporaryDirectory(prefix="krew-like-") as tmp:
        staging, moved = Path(tmp, "download"), Path(tmp, "move")
        staging.mkdir()
        moved.mkdir()
        _extract(data, staging)
        for op in entry.get("files") or [{"from": "*", "to": "."}]:
            _move(staging, moved, op["from"], op["to"])
        install_dir = root / "store" / name / version
        install_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(moved), str(install_dir))
    binary = install_dir / entry["bin"]
    if not binary.is_file():
        raise Invalid(f"source binary {entry['bin']!r} cannot be found in extracted archive")
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "bin" / f"kubectl-{name.replace('-', '_')}").symlink_to(binary)
    if not any(p.name.lower() in LICENSE_NAMES for p in install_dir.rglob("*") if p.is_file()):
        raise Invalid("LICENSE (or alike) file is not extracted from the archive")
    return install_dir


def _fetch(uri: str) -> bytes:
    if urllib.parse.urlparse(uri).scheme != "file":
        raise Invalid(f"this test installs from file:// URIs or an --archive only, not {uri}")
    with urllib.request.urlopen(uri) as response:
        return response.read()


def _extract(data: bytes, target: Path) -> None:
    """krew detects the type from the bytes (gzip or zip) and refuses paths that escape."""
    if data[:2] == b"\x1f\x8b":
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _inside(target, member.name)
            # krew keeps the modes it finds; "tar" does too, where this Python has filters
            safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            tar.extractall(target, members=members, **safe)  # type: ignore[arg-type]
    elif data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                _inside(target, member)
            archive.extractall(target)
    else:
        raise Invalid("the archive is neither a .tar.gz nor a .zip")


def _inside(base: Path, relative: str) -> None:
    resolved = (base / relative).resolve()
    if resolved != base.resolve() and base.resolve() not in resolved.parents:
        raise Invalid(f"archive entry {relative!r} escapes the extraction directory")


def _move(source: Path, target: Path, pattern: str, to: str) -> None:
    if posixpath.normpath(to) != to:
        raise Invalid(f"the provided path is not clean, {to!r}")
    direct = source / pattern
    if direct.exists():  # a file named exactly: moved (renamed when `to` is not ".")
        destination = target / (direct.name if to == "." else to)
        moves: List[Tuple[Path, Path]] = [(direct, destination)]
    else:
        found = sorted(source.glob(pattern))
        if not found:
            raise Invalid(f"no files in the plugin archive matched the glob pattern={pattern}")
        moves = [(path, target / to / path.name) for path in found]
    for src, dst in moves:
        _inside(source, os.path.relpath(src, source))
        _inside(target, os.path.relpath(dst, target))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
