"""The image's recipe agrees with the collector and with the Dockerfile (no root needed)."""

from __future__ import annotations

import ast
import re
import sys

import pytest
from conftest import REPO
from imgbuild import recipe

from kubectl_offwake.collector.headers import BUNDLED_ROOT

IMAGE = REPO / "image"


def _collector_imports() -> set:
    """Top-level names of every stdlib or bcc module the node-side code imports."""
    found = set()
    for sub in ("collector", "wire"):
        for path in (REPO / "kubectl_offwake" / sub).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {n for n in found if n in sys.stdlib_module_names or n == "bcc"}


def test_python_modules_lists_everything_the_collector_imports():
    listed = {line.split("#")[0].strip().split(".")[0]
              for line in (IMAGE / "python-modules").read_text().splitlines()}
    missing = _collector_imports() - listed
    assert not missing, f"add {sorted(missing)} to image/python-modules"


def test_package_list_parses_and_keeps_what_the_collector_runs():
    packages = recipe.read_packages()
    assert {"python3", "python3-bpfcc", "kmod", "mount"} <= set(packages.install)
    assert packages.headers == ["linux-headers-amd64"]
    assert {"dpkg", "perl-base"} <= set(packages.drop)


def test_a_bad_package_line_names_its_line(tmp_path):
    bad = tmp_path / "packages"
    bad.write_text("install python3\ninstal python3-bpfcc\n")
    with pytest.raises(recipe.RecipeError, match=r"packages:2: expected"):
        recipe.read_packages(str(bad))


def test_dockerfile_builds_from_the_same_list_and_slim_script():
    text = (IMAGE / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bpackages\b.*\bslim\b", text, re.M)
    assert re.search(r"awk '\$1 == \"install\"", text)
    assert re.search(r"awk '\$1 == \"headers\"", text)
    assert "sh /tmp/offwake-image/slim" in text
    assert BUNDLED_ROOT in text, "the Dockerfile must unpack the headers where the collector looks"


def test_slim_trims_the_headers_where_the_collector_looks():
    assert f"{BUNDLED_ROOT}/linux-headers-" in (IMAGE / "slim").read_text()
