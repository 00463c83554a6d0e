"""The image's recipe: the package list, and where the image's own source lives.

``image/packages`` is read here and by ``image/Dockerfile`` (with awk); this module is the
build's only reader of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from typing import List

IMAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(IMAGE_DIR)
# The plugin this image belongs to is the one in this checkout, whatever else is installed.
sys.path.insert(0, REPO_DIR)

from kubectl_offwake import __version__ as PLUGIN_VERSION  # noqa: E402
from kubectl_offwake.collector.headers import BUNDLED_ROOT  # noqa: E402

__all__ = ["BUNDLED_ROOT", "PLUGIN_VERSION", "PackageList", "RecipeError", "read_packages",
           "source_files", "sources_digest"]

PACKAGES = os.path.join(IMAGE_DIR, "packages")
PYTHON_MODULES = os.path.join(IMAGE_DIR, "python-modules")
SLIM = os.path.join(IMAGE_DIR, "slim")
#: What the image is built from (besides Debian): a change here is a new image.
SOURCES = ("packages", "python-modules", "slim", "build", "imgbuild")

KINDS = ("install", "headers", "drop")
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


class RecipeError(ValueError):
    """The package list cannot be used as written."""


@dataclass
class PackageList:
    install: List[str] = field(default_factory=list)
    headers: List[str] = field(default_factory=list)
    drop: List[str] = field(default_factory=list)


def read_packages(path: str = PACKAGES) -> PackageList:
    """``KIND NAME [# comment]`` lines; blank lines and ``#`` comments skipped."""
    out = PackageList()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 2 or words[0] not in KINDS or not _NAME.fullmatch(words[1]):
                raise RecipeError(
                    f"{path}:{number}: expected '{'|'.join(KINDS)} PACKAGE', got {line.strip()!r}")
            getattr(out, words[0]).append(words[1])
    if not out.install:
        raise RecipeError(f"{path}: no 'install' lines, so the image would have no Python")
    return out


def source_files() -> List[str]:
    """The image's source files, relative to the repository, sorted."""
    out: List[str] = []
    for name in SOURCES:
        path = os.path.join(IMAGE_DIR, name)
        if os.path.isdir(path):
            for top, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                out += [os.path.relpath(os.path.join(top, f), REPO_DIR)
                        for f in files if not f.endswith(".pyc")]
        elif os.path.exists(path):
            out.append(os.path.relpath(path, REPO_DIR))
    return sorted(out)


def sources_digest() -> str:
    """One sha256 over the image's source files (names and bytes)."""
    sha = hashlib.sha256()
    for rel in source_files():
        with open(os.path.join(REPO_DIR, rel), "rb") as f:
            data = f.read()
        sha.update(f"{rel}\0{len(data)}\0".encode())
        sha.update(data)
    return "sha256:" + sha.hexdigest()
