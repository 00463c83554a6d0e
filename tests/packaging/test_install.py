"""A clean install, as a new user makes it: ``pip install .`` in a fresh venv (and pipx),
then the plugin through kubectl's own plugin discovery with only the venv and kubectl on PATH.

Catches what an editable install on a developer's machine hides: an undeclared dependency
(click, PyYAML), a module left out of the wheel, a traceback instead of a usage error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from install_helpers import FIXTURE, REPO, clean_env, only_on_path, run

from kubectl_offwake import __version__

pytestmark = [pytest.mark.slow]


def kubectl(installed, *args: str) -> subprocess.CompletedProcess:
    # the image is chosen by the environment, so `version` needs no cluster to say it
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120,
                          env=dict(installed.env(), OFFWAKE_IMAGE="registry.test/collector:1"),
                          cwd=str(installed.home))


def test_kubectl_plugin_list_finds_it(installed):
    done = kubectl(installed, "plugin", "list")
    assert done.returncode == 0, done.stderr
    assert str(installed.bin / "kubectl-offwake") in done.stdout
    assert str(installed.bin / "kubectl_complete-offwake") not in done.stdout  # not a plugin


@pytest.mark.parametrize("args", [["--version"], ["version"]])
def test_version(installed, args):
    done = kubectl(installed, "offwake", *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"kubectl-offwake {__version__}"


@pytest.mark.parametrize("args, fragment", [
    (["--no-such-flag"], "No such option: --no-such-flag"),
    (["report"], "Missing argument 'INPUT'"),
    (["report", "--format", "pdf", str(FIXTURE)], "Invalid value for '--format'"),
])
def test_usage_errors_are_one_line_exit_2(installed, args, fragment):
    done = kubectl(installed, "offwake", *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_report_of_a_fixture(installed):
    done = kubectl(installed, "offwake", "report", str(FIXTURE), "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == "offwake.report/1"
    assert report["totals"]["edges"] == 6
    table = kubectl(installed, "offwake", "report", str(FIXTURE))
    assert table.returncode == 0, table.stderr
    assert "Where the off-CPU time went" in table.stdout and "unix-socket" in table.stdout


#: Run by the installed venv's python: each third-party module that kubectl_offwake imports
#: (found in its source), with the distributions that provide it. The collector runs under
#: the node's system python with BCC, the demo's envoy comes from the `demo` extra.
_IMPORTS_PROBE = """
import ast, json, pathlib, sys, importlib.metadata as md, kubectl_offwake
root = pathlib.Path(kubectl_offwake.__file__).parent
found = set()
for f in root.rglob("*.py"):
    if f.relative_to(root).parts[0] in ("collector", "demo"):
        continue
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
owners = md.packages_distributions()
third = sorted(found - set(sys.stdlib_module_names) - {"kubectl_offwake"})
print(json.dumps({m: owners.get(m, []) for m in third}))
"""


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.lower().replace("_", "-")


def test_every_imported_package_is_declared(installed):
    py = str(installed.bin / "python")
    imported = json.loads(run([py, "-c", _IMPORTS_PROBE], env=installed.env()).stdout)
    requires = json.loads(run([py, "-c", "import json, importlib.metadata as md; "
                               "print(json.dumps(md.requires('kubectl-offwake')))"],
                              env=installed.env()).stdout)
    declared = {_name(r) for r in requires if "extra ==" not in r}
    assert {"typer", "rich", "kubernetes", "pyyaml"} <= declared
    for module, dists in imported.items():
        assert dists, f"kubectl_offwake imports {module}, which nothing installed provides"
        assert {_name(d) for d in dists} & declared, \
            f"kubectl_offwake imports {module} (from {dists}) without declaring it"


def test_pipx_install(tmp_path):
    pipx = shutil.which("pipx")
    assert pipx, "pipx is not installed (tests/bootstrap installs Debian's pipx)"
    home = tmp_path / "home"
    home.mkdir()
    tools = only_on_path(tmp_path / "tools", kubectl=shutil.which("kubectl") or "kubectl",
                         python3=shutil.which("python3") or "python3")
    env = clean_env(f"{tools}{os.pathsep}/usr/bin:/bin", home)
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
               PIPX_DEFAULT_PYTHON=str(Path(os.path.realpath(shutil.which("python3") or ""))))
    run([pipx, "install", str(REPO)], env=env, cwd=str(home))
    bin_dir = tmp_path / "bin"
    assert {p.name for p in bin_dir.iterdir()} >= {"kubectl-offwake", "kubectl_complete-offwake"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{tools}"
    done = subprocess.run(["kubectl", "offwake", "report", str(FIXTURE)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Where the off-CPU time went" in done.stdout
