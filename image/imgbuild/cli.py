"""``image/build``: the collector image from Debian packages, without a Docker engine.

The steps: resolve the package versions the mirror serves (private apt), build the root
filesystem unless the cache has a layer for exactly these inputs (mmdebstrap, the kernel
headers, image/slim), write the OCI archive, and push it if asked. Progress goes to
stderr; the inputs and the result go to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Dict, List, NoReturn, Optional, Tuple

from . import debian, oci, push, rootfs
from .recipe import (
    PLUGIN_VERSION,
    REPO_DIR,
    RecipeError,
    read_packages,
    source_files,
    sources_digest,
)

DEFAULT_OUT = os.path.join(REPO_DIR, "build", "image", "offwake-collector.oci.tar")
ENTRYPOINT = ["python3"]
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
TITLE = "kubectl-offwake collector"
DESCRIPTION = ("Debian bookworm's python3 with BCC and fallback kernel headers; the "
               "collector itself arrives with each run as a zipapp")
#: Cached layers kept besides the one just used.
KEEP_LAYERS = 3
#: The tool each step runs, and the Debian package that provides it.
TOOLS = {"apt-get": "apt", "mmdebstrap": "mmdebstrap", "dpkg-deb": "dpkg",
         "chroot": "coreutils"}
PUSH_TOOLS = {"skopeo": "skopeo"}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Usage(Exception):
    """Something the user has to fix before a build can run (exit 2)."""


class Failed(Exception):
    """The build or the push failed (exit 1)."""


def progress(message: str) -> None:
    print(f"image/build: {message}", file=sys.stderr, flush=True)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="image/build",
        description="Build the kubectl-offwake collector image (Debian bookworm python3 + "
        "BCC + fallback kernel headers) as an OCI archive, from the packages in "
        "image/packages, with mmdebstrap and no Docker engine. Needs root. Reproducible: "
        "the same inputs (image/ sources, the package versions the mirror resolves to, "
        "SOURCE_DATE_EPOCH) give the same digest; a build with unchanged inputs reuses the "
        "cached layer and takes seconds.",
        epilog="Prints the inputs, then 'digest: sha256:...', the sizes and the ten largest "
        "paths. Exit status: 0 success, 1 the build or push failed, 2 bad usage or a "
        "missing prerequisite.")
    p.add_argument("--out", metavar="PATH", default=DEFAULT_OUT,
                   help="where to write the OCI archive (oci-archive tar); default "
                   f"{os.path.relpath(DEFAULT_OUT, REPO_DIR)} in the repository")
    p.add_argument("--push", metavar="REF",
                   help="also push the image to this reference, e.g. "
                   "127.0.0.1:5000/offwake-collector:dev (plain HTTP only for registries "
                   "on 127.0.0.1/localhost)")
    p.add_argument("--cache-dir", metavar="DIR", default=default_cache_dir(),
                   help="cache of package lists, header packages and built layers "
                   "(default: %(default)s)")
    p.add_argument("--no-cache", action="store_true",
                   help="build the root filesystem again even if a layer for these inputs "
                   "is cached")
    return p.parse_args(argv)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kubectl-offwake", "image")


def require_tools(tools: Dict[str, str]) -> None:
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            raise Usage(f"{tool} is not installed; install it with "
                        f"'apt-get install {package}' (or run tests/bootstrap)")


def require_root() -> None:
    if os.geteuid() != 0:
        raise Usage("image/build needs root to build the root filesystem (mmdebstrap "
                    "installs the packages in a chroot); run it as root, e.g. sudo image/build")


@dataclass
class Provenance:
    """Where the image's source stands: its date (SOURCE_DATE_EPOCH) and revision."""

    date: int
    revision: str  # the last commit that changed the image's sources, "-dirty" if edited
    origin: str  # how the date was found


def provenance() -> Provenance:
    files = source_files()
    revision = _git("log", "-1", "--format=%H %ct", "--", *files)
    dirty = bool(_git("status", "--porcelain", "--", *files))
    commit, commit_date = revision.split() if revision else ("", "")
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        if not env.isdigit():
            raise Usage(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds")
        return Provenance(int(env), commit + ("-dirty" if dirty else ""), "SOURCE_DATE_EPOCH")
    if not commit:
        raise Usage("cannot date the image's sources (no git history for image/); set "
                    "SOURCE_DATE_EPOCH to the release's date in seconds")
    return Provenance(int(commit_date), commit + ("-dirty" if dirty else ""),
                      f"last commit to image/, {commit[:12]}")


def _git(*args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", REPO_DIR, *args], capture_output=True,
                              text=True, check=False)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def project_url() -> str:
    """The project's source URL: pyproject.toml's [project.urls], else git's origin remote,
    else nothing (and no label)."""
    try:
        import tomllib

        with open(os.path.join(REPO_DIR, "pyproject.toml"), "rb") as f:
            urls = tomllib.load(f).get("project", {}).get("urls", {})
        for key in ("Source", "Repository", "Homepage"):
            if isinstance(urls.get(key), str):
                return str(urls[key])
    except (ImportError, OSError, ValueError):  # Python < 3.11 has no tomllib
        pass
    # never a token of a https://user:token@host/ remote in a public label
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", _git("remote", "get-url", "origin"))


def iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def tools_version() -> str:
    """The build tools whose output lands in the layer's bytes."""
    try:
        mm = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    except OSError:
        mm = "mmdebstrap missing"
    py = ".".join(map(str, sys.version_info[:2]))
    return f"{mm}, python {py} (tarfile), zlib {zlib.ZLIB_RUNTIME_VERSION}"


def inputs_key(inputs: dict) -> str:
    return hashlib.sha256(oci.canonical_json(inputs)).hexdigest()


def print_inputs(inputs: dict, key: str) -> None:
    print("inputs:")
    print(f"  sources: {inputs['sources']} ({', '.join(inputs['source_files'])})")
    for line in inputs["mirror"]:
        print(f"  mirror: {line}")
    packages = [f"{n}={v}" for n, v in inputs["packages"].items()]
    print(f"  packages ({len(packages)}, Essential:yes + image/packages 'install', resolved):")
    _wrapped(packages, "    ")
    print("  kernel headers: " + ", ".join(f"{n}={v}" for n, v in inputs["headers"].items()))
    print(f"  source date: {inputs['source_date']} ({iso(inputs['source_date'])}, "
          f"{inputs['source_date_origin']})")
    print(f"  tools: {inputs['tools']}")
    print(f"  key: {key}")


def _wrapped(words: List[str], indent: str, width: int = 100) -> None:
    line = indent
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip():
            print(line.rstrip())
            line = indent
        line += word + " "
    if line.strip():
        print(line.rstrip())


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def human_seconds(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s" if s >= 60 else f"{s:.1f}s"


class Cache:
    """Built layers, keyed by the inputs' sha256, plus apt's private state; one build at a
    time (a lock file), so parallel runs wait instead of building the same thing twice."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.layers = os.path.join(root, "layers")
        os.makedirs(self.layers, exist_ok=True)
        self._lock = open(os.path.join(root, "lock"), "w")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another image/build using {root}")
            fcntl.flock(self._lock, fcntl.LOCK_EX)

    def entry(self, key: str) -> str:
        return os.path.join(self.layers, key)

    def get(self, key: str) -> Optional[oci.Layer]:
        path = self.entry(key)
        try:
            with open(os.path.join(path, "layer.json"), encoding="utf-8") as f:
                data = json.load(f)
            layer = oci.Layer.from_json(os.path.join(path, "layer.tar.gz"), data["layer"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if oci.file_digest(layer.path) != layer.digest:
            progress(f"the cached layer in {path} is damaged; building it again")
            return None
        os.utime(path)
        return layer

    def prune(self, keep: str) -> None:
        """Keep the KEEP_LAYERS most recently used layers besides ``keep``; also removes
        what a killed build left (never through something still mounted in it)."""
        entries = sorted((e for e in os.scandir(self.layers) if e.is_dir()),
                         key=lambda e: e.stat().st_mtime, reverse=True)
        for old in [e for e in entries if e.name != keep][KEEP_LAYERS:]:
            rootfs.remove_tree(old.path)


def build_layer(cache: Cache, key: str, inputs: dict, apt: debian.Apt,
                header_debs: List[str]) -> oci.Layer:
    """Build the root filesystem and pack it into the cache under ``key``."""
    require_root()
    require_tools(TOOLS)
    work = cache.entry(key) + f".tmp{os.getpid()}"
    root = os.path.join(work, "root")
    rootfs.remove_tree(work)
    os.makedirs(work)
    try:
        started = time.monotonic()
        progress("building the root filesystem with mmdebstrap (a few minutes)")
        rootfs.mmdebstrap(root, apt.sources_list, inputs["packages"], inputs["source_date"],
                          progress)
        got = rootfs.installed(root)
        if got != inputs["packages"]:
            diff = sorted(set(got.items()) ^ set(inputs["packages"].items()))
            raise Failed("mmdebstrap installed other packages than were resolved "
                         f"({', '.join(f'{n}={v}' for n, v in diff[:4])}); if the mirror "
                         "changed during the build, run image/build again")
        trees = rootfs.add_headers(root, header_debs)
        progress(f"bundled kernel headers: {', '.join(trees)}")
        progress("slimming (image/slim)")
        rootfs.slim(root, progress)
        progress(f"root filesystem ready in {human_seconds(time.monotonic() - started)}; "
                 "packing the layer")
        layer = oci.write_layer(root, os.path.join(work, "layer.tar.gz"),
                                inputs["source_date"])
        rootfs.remove_tree(root)
        layer.path = os.path.join(cache.entry(key), "layer.tar.gz")
        with open(os.path.join(work, "layer.json"), "w", encoding="utf-8") as f:
            json.dump({"inputs": inputs, "layer": layer.to_json(),
                       "build_seconds": round(time.monotonic() - started, 1)}, f, indent=1)
        rootfs.remove_tree(cache.entry(key))
        os.rename(work, cache.entry(key))
        return layer
    finally:
        rootfs.remove_tree(work)


def resolve(cache: Cache) -> Tuple[debian.Apt, dict, List[str]]:
    """The build's inputs (printed and hashed into the cache key), and the header .debs."""
    recipe = read_packages()
    configured = debian.configured_sources()
    sources = configured or debian.default_sources()
    if not configured:
        progress("apt has no bookworm sources here; using deb.debian.org")
    apt = debian.Apt(os.path.join(cache.root, "apt"), sources)
    progress(f"updating package lists ({', '.join(s.suite for s in sources)})")
    apt.update()
    packages = apt.resolve([*rootfs.MERGED_USR_PACKAGES, *recipe.install])
    headers: Dict[str, str] = {}
    for meta in recipe.headers:
        headers.update(apt.header_packages(meta))
    debs = apt.download(headers)
    source = provenance()
    inputs = {
        "sources": sources_digest(),
        "source_files": source_files(),
        "mirror": [s.line() for s in sources],
        "packages": packages,
        "headers": dict(sorted(headers.items())),
        "source_date": source.date,
        "source_date_origin": source.origin,
        "revision": source.revision,
        "tools": tools_version(),
    }
    return apt, inputs, debs


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.push:
        try:
            host, _ = push.split_ref(args.push)
        except ValueError as err:
            raise Usage(str(err)) from None
        require_tools(PUSH_TOOLS)
        push.check_reachable(host)  # before minutes of building, not after
    require_tools({"apt-get": "apt"})
    if args.no_cache:
        require_root()
    try:
        os.makedirs(args.cache_dir, exist_ok=True)
    except OSError as err:
        raise Usage(f"cannot use the cache directory {args.cache_dir} ({err.strerror}); "
                    "choose another with --cache-dir") from None
    cache = Cache(args.cache_dir)
    apt, inputs, debs = resolve(cache)
    keyed = {k: v for k, v in inputs.items() if k not in ("source_date_origin", "revision")}
    key = inputs_key(keyed)
    print_inputs(inputs, key)
    layer = None if args.no_cache else cache.get(key)
    if layer:
        progress(f"layer cached ({cache.entry(key)})")
    else:
        layer = build_layer(cache, key, inputs, apt, debs)
    cache.prune(key)

    version = PLUGIN_VERSION
    labels = {
        "org.opencontainers.image.title": TITLE,
        "org.opencontainers.image.description": DESCRIPTION,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": inputs["revision"],
        "org.opencontainers.image.created": iso(inputs["source_date"]),
    }
    url = project_url()
    if url:
        labels["org.opencontainers.image.source"] = url
    image = oci.assemble(layer, created=iso(inputs["source_date"]), entrypoint=ENTRYPOINT,
                         env=ENV, labels=labels,
                         history=f"image/build: mmdebstrap bookworm + image/slim ({key[:12]})")
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    size = oci.write_archive(image, out, mtime=inputs["source_date"], ref_name=version)

    print(f"image: {out}")
    print(f"digest: {image.digest}")
    print(f"size: {mib(layer.size)} compressed (archive {mib(size)}), "
          f"{mib(layer.uncompressed_size)} uncompressed")
    print("largest paths:")
    for nbytes, path in layer.largest:
        print(f"  {mib(nbytes):>11}  {path}")
    print(f"time: {human_seconds(time.monotonic() - started)}")
    sys.stdout.flush()
    if args.push:
        progress(f"pushing to {args.push}")
        pushed = push.push(out, args.push)
        print(f"pushed: {args.push}")
        print(f"pushed digest: {pushed}")
        if pushed != image.digest:
            raise Failed(f"the registry holds {pushed}, not the built {image.digest}")
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Usage as err:
        _fail(str(err), EXIT_USAGE)
    except RecipeError as err:
        _fail(str(err), EXIT_USAGE)
    except (Failed, debian.MirrorError, rootfs.RootfsError, push.PushError) as err:
        _fail(str(err), EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was cached", EXIT_FAILED)
    except OSError as err:
        _fail(f"{err.filename or 'a file'}: {err.strerror}", EXIT_FAILED)


def _fail(message: str, code: int) -> NoReturn:
    print(f"image/build: {message}", file=sys.stderr)
    sys.exit(code)
