"""What release/build makes: the single-file plugin, the krew archive and its manifest.

The manifest must pass krew's rules and carry the archive's real sha256; the archive,
installed the way krew installs it into an empty KREW_ROOT, must run ``kubectl offwake``
with nothing on PATH but krew's bin directory, kubectl and a python3 >= the minimum.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import List

import krew_like
import pytest
from install_helpers import FIXTURE, REPO, clean_env, kubectl, only_on_path, run

from kubectl_offwake import __version__
from kubectl_offwake.entry import MIN_PYTHON

pytestmark = [pytest.mark.slow]


def _interpreters() -> List[Path]:
    """Every CPython on this machine from the minimum up (pyenv's too), one per version."""
    found = {}
    candidates = [Path(sys.executable), Path("/usr/bin/python3")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(pyenv_root.glob("versions/3.*/bin/python3"))
    for path in candidates:
        if not path.exists():
            continue
        done = subprocess.run([str(path), "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            found.setdefault(done.stdout.strip(), path)
    return sorted(found.values())


def _version_of(python: Path) -> tuple:
    out = run([str(python), "-c", "import sys; print(*sys.version_info[:2])"]).stdout
    return tuple(int(x) for x in out.split())


def test_manifest_passes_krews_rules_and_names_the_archive(release):
    manifest_path = release.one("offwake.yaml")
    manifest = krew_like.validate_file(manifest_path)
    archive = release.one("kubectl-offwake-v*.tar.gz")
    spec = manifest["spec"]
    assert spec["version"] == f"v{__version__}"
    (entry,) = spec["platforms"]
    assert entry["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert entry["uri"] == archive.as_uri()  # no --download-url: the archive just built
    assert entry["bin"] == "kubectl-offwake"
    assert spec["homepage"] and spec["description"]
    assert "kubectl offwake setup" in spec["caveats"] and "privileged" in spec["caveats"]
    assert f"python3 >= {'.'.join(map(str, MIN_PYTHON))}" in spec["caveats"]


def test_archive_holds_the_single_file_its_completion_and_the_licence(release):
    with tarfile.open(release.one("kubectl-offwake-v*.tar.gz")) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"kubectl-offwake", "kubectl_complete-offwake", "LICENSE"}
        single = tar.extractfile(members["kubectl-offwake"]).read()  # type: ignore[union-attr]
        licence = tar.extractfile(members["LICENSE"]).read()  # type: ignore[union-attr]
    assert single == release.one("kubectl-offwake").read_bytes()
    assert licence == (REPO / "LICENSE").read_bytes()
    assert members["kubectl-offwake"].mode == members["kubectl_complete-offwake"].mode == 0o755
    assert single.startswith(b"#!/usr/bin/env python3\n")


def test_no_compiled_code_in_the_single_file(release):
    import zipfile

    with zipfile.ZipFile(release.one("kubectl-offwake")) as zf:
        compiled = [n for n in zf.namelist() if n.endswith((".so", ".pyd", ".dylib"))]
    assert compiled == []


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.update(apiVersion="krew.googlecontainertools.github.com/v1alpha1"),
     "apiVersion"),
    (lambda m: m["metadata"].update(name="other"), "should be named"),
    (lambda m: m["spec"].update(version="0.1.0"), "version"),
    (lambda m: m["spec"].update(shortDescription="two\nlines"), "line breaks"),
    (lambda m: m["spec"]["platforms"][0].update(sha256="ABC"), "sha256"),
    (lambda m: m["spec"]["platforms"][0].pop("bin"), "`bin`"),
    (lambda m: m["spec"]["platforms"][0].update(files=[]), "`files`"),
    (lambda m: m["spec"]["platforms"][0].pop("selector"), "nil selector"),
    (lambda m: m["spec"]["platforms"][0].update(selector={"matchLabels": {"cpu": "x"}}),
     "not supported"),
    (lambda m: m["spec"]["platforms"].append(copy.deepcopy(m["spec"]["platforms"][0])),
     "overlapping"),
    (lambda m: m["spec"]["platforms"][0].update(selector={"matchLabels": {"os": "plan9"}}),
     "doesn't match any"),
])
def test_the_rules_refuse_broken_manifests(release, tmp_path, mutate, message):
    """So a manifest that passes has passed something."""
    manifest = krew_like.load(release.one("offwake.yaml"))
    mutate(manifest)
    path = tmp_path / "offwake.yaml"
    import yaml

    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(krew_like.Invalid, match=re.escape(message)):
        krew_like.validate_file(path)


def test_a_changed_archive_is_refused(release, tmp_path):
    tampered = tmp_path / "kubectl-offwake.tar.gz"
    tampered.write_bytes(release.one("kubectl-offwake-v*.tar.gz").read_bytes() + b"\0")
    with pytest.raises(krew_like.Invalid, match="checksum"):
        krew_like.install(release.one("offwake.yaml"), tmp_path / "krew", archive=tampered)


@pytest.fixture(scope="module")
def krew_root(release, tmp_path_factory):
    root = tmp_path_factory.mktemp("krew-root")
    installed = krew_like.install(release.one("offwake.yaml"), root)
    assert installed == root / "store" / "offwake" / f"v{__version__}"
    return root


def _krew_env(krew_root: Path, home: Path, python: Path) -> dict:
    """PATH: krew's bin, then kubectl and python3 alone."""
    tools = home / "tools"
    if not tools.exists():
        only_on_path(tools, kubectl=kubectl(), python3=str(python))
    return clean_env(f"{krew_root / 'bin'}{os.pathsep}{tools}", home)


def test_installed_from_the_manifest_it_runs_through_kubectl(krew_root, tmp_path):
    env = _krew_env(krew_root, tmp_path, Path(sys.executable))
    listed = run(["kubectl", "plugin", "list"], env=env)
    assert str(krew_root / "bin" / "kubectl-offwake") in listed.stdout
    version = run(["kubectl", "offwake", "--version"], env=env)
    assert version.stdout == f"kubectl-offwake {__version__}\n"
    report = run(["kubectl", "offwake", "report", str(FIXTURE)], env=env, cwd=str(tmp_path))
    assert "Where the off-CPU time went" in report.stdout and "pilot-agent" in report.stdout
    usage = subprocess.run(["kubectl", "offwake", "--no-such-flag"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert len(usage.stderr.strip().splitlines()) == 1, usage.stderr


def test_completion_script_from_the_archive(krew_root, tmp_path):
    """What the caveats say: link kubectl_complete-offwake beside the plugin on PATH."""
    store = krew_root / "store" / "offwake" / f"v{__version__}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl_complete-offwake").symlink_to(store / "kubectl_complete-offwake")
    env = _krew_env(krew_root, tmp_path, Path(sys.executable))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    done = run(["kubectl", "__complete", "offwake", "re"], env=env)
    assert done.stdout.splitlines()[0].split("\t")[0] == "report"
    assert done.stdout.splitlines()[-1] == ":4"


@pytest.mark.parametrize("python", _interpreters(), ids=lambda p: str(p))
def test_single_file_on_every_python(release, tmp_path, python):
    """Any CPython >= the minimum runs it; an older one is told so in one line."""
    single = release.one("kubectl-offwake")
    env = clean_env(str(only_on_path(tmp_path / "tools", python3=str(python))), tmp_path)
    done = subprocess.run([str(python), str(single), "report", str(FIXTURE), "-o", "folded"],
                          capture_output=True, text=True, env=env, timeout=180)
    if _version_of(python) < MIN_PYTHON:
        assert done.returncode == 1
        assert done.stderr.startswith("error: kubectl-offwake needs Python >= ")
        assert len(done.stderr.splitlines()) == 1
        return
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 6  # one folded line per wake path


def test_same_inputs_same_bytes(release, tmp_path):
    """A second build gives byte-identical artifacts, so the manifest's sha256 is stable."""
    again = tmp_path / "again"
    run([sys.executable, str(REPO / "release" / "build"), "--out", str(again),
         "--download-url", release.out.as_uri()],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    for name in ("kubectl-offwake", f"kubectl-offwake-v{__version__}.tar.gz", "offwake.yaml"):
        assert (again / name).read_bytes() == (release.out / name).read_bytes(), name
