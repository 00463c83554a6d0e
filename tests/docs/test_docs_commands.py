"""Every shell command in README.md and docs/ runs, or says what it needs; pasted output is real.

How commands are found: tests/docs/docblocks.py. What runs each, the ``# needs WHAT``
convention for the few this machine cannot run, placeholders and ``OFFWAKE_UPDATE_DOCS=1``:
tests/docs/docrules.py. This module checks that every command is covered and runs the
groups that need neither root nor a cluster: ``ci`` (against ``.ci/run``), ``pytest``
(collected) and ``fixture`` (run here, pasted output compared). The ``demo`` and ``host``
groups run in tests/docs/test_docs_root.py, ``lab`` in tests/e2e/test_docs_lab.py,
``install`` in tests/packaging/test_docs_install.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from . import docblocks, docrules
from .docblocks import REPO, DocError
from .docrules import (
    PLACEHOLDERS,
    all_parts,
    assert_ran,
    check_outputs,
    ci_steps,
    console_parts,
    fixture_workdir,
    parts_of,
    plugin_env,
    problems,
    run_part,
)


def test_every_document_is_readable() -> None:
    for doc in docblocks.documents():
        docblocks.commands(doc)  # raises DocError naming the block it cannot read


def test_every_command_is_run_or_marked() -> None:
    found = problems()
    assert found == [], "\n".join(found)


def test_every_group_has_commands() -> None:
    """The documents exercise every runner (a rule nothing uses would hide a typo in it)."""
    groups = {part.group for part in all_parts()}
    assert set(docrules.GROUPS) <= groups, sorted(set(docrules.GROUPS) - groups)


def test_ci_runs_the_documented_steps() -> None:
    """``tests/bootstrap && python3 -m pytest`` is what CI does on a clean machine: every
    documented ``ci`` command is a step of .ci/run, and bootstrap comes first."""
    steps = ci_steps()
    assert steps and steps[0] == "tests/bootstrap", steps
    for part in parts_of("ci"):
        command = part.text[len("bash "):] if part.text.startswith("bash ") else part.text
        assert command in steps, f"{part.command.where}: .ci/run does not run {part.text!r}"
    readme = [p.text for p in all_parts() if p.command.doc.name == "README.md"]
    assert "python3 -m pytest" in readme and "tests/bootstrap" in readme


@pytest.mark.slow
@pytest.mark.parametrize("part", parts_of("pytest"), ids=lambda p: p.text)
def test_pytest_selections_select_tests(part: docrules.Part) -> None:
    """A documented pytest selection is collected: it must name tests that exist. (Running
    it would prove nothing the whole suite, which CI runs, does not.)"""
    done = subprocess.run(["bash", "-c", f"{part.text} --collect-only -q"], cwd=REPO,
                          env=plugin_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{part.command.where}: {done.stdout[-2000:]}{done.stderr}"
    counted = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", done.stdout)
    assert counted and int(counted.group(1)) > 0, \
        f"{part.command.where}: {part.text!r} selects no test:\n{done.stdout[-1000:]}"


def test_fixture_commands_run_and_their_output_is_real(tmp_path: Path) -> None:
    assert shutil.which("kubectl"), "the documented commands run the plugin through kubectl"
    workdir = fixture_workdir(tmp_path)
    runs = []
    for part in parts_of("fixture") + [p for p in console_parts("fixture")
                                        if p not in parts_of("fixture")]:
        ran = run_part(part, workdir, PLACEHOLDERS, timeout=120)
        assert_ran(ran)
        runs.append(ran)
    check_outputs(runs, PLACEHOLDERS)


# -- the machinery can fail ----------------------------------------------------------------------


def _doc(tmp_path: Path, text: str) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "README.md").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, expected", [
    ("# x\n\n    rm -rf /tmp/nothing    # tidy up\n\n    kubectl offwake report x.txt\n",
     ["README.md:3: no test runs 'rm -rf /tmp/nothing'"]),
    ("    kubectl offwake deploy/APP -n NS\n"
     "    kubectl offwake report <file>\n"
     "    OFFWAKE_UPDATE_GOLDEN=1 python3 -m pytest tests/unit\n"
     "    kubectl offwake report offwake-<run>.jsonl.gz\n",
     ["placeholders no test fills: ['APP', 'NS']", "placeholders no test fills: ['<file>']"]),
    ("    kubectl krew install offwake   # needs krew\n"
     "    gcloud container clusters list   # needs a cloud\n"
     "    kubectl offwake report y.txt   # needs a real cluster\n",
     ["'# needs a cloud' is not a known need", "the fixture group runs it here; drop the mark"]),
], ids=["unmarked", "placeholders", "marks"])
def test_what_is_neither_run_nor_marked_is_reported(tmp_path: Path, text: str,
                                                     expected: List[str]) -> None:
    found = problems(_doc(tmp_path, text))
    assert len(found) == len(expected), found
    for sentence, part in zip(found, expected):
        assert part in sentence, (sentence, part)


def test_untagged_fences_and_consoles_without_a_prompt_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DocError, match="without a tag"):
        docblocks.commands(_doc(tmp_path, "```\nls\n```\n") / "README.md")
    with pytest.raises(DocError, match="must start with a command"):
        docblocks.commands(_doc(tmp_path, "```console\nhello\n$ ls\n```\n") / "README.md")


def test_blocks_commands_and_outputs_are_read_as_written(tmp_path: Path) -> None:
    text = ("Intro\n\n"
            "- a list item\n\n"
            "    indented in a list: a paragraph, not code\n\n"
            "Back to text.\n\n"
            "    a && b; c 'quoted # not a comment'   # a comment\n"
            "    long \\\n"
            "      continued\n\n"
            "```console\n$ one\nout 1\n\n$ two  # needs krew\nout 2\n```\n\n"
            "```text\nnot a command\n```\n")
    commands = docblocks.commands(_doc(tmp_path, text) / "README.md")
    assert [(c.line, c.text, c.comment) for c in commands] == [
        (9, "a && b; c 'quoted # not a comment'", "a comment"),
        (10, "long continued", ""),
        (14, "one", ""), (17, "two", "needs krew")]
    one, two = commands[2], commands[3]
    assert one.output == ("out 1", "") and two.output == ("out 2",) and two.need == "krew"
    assert docrules.split_parts(commands[0].text) == ["a", "b", "c 'quoted # not a comment'"]
    assert docrules.split_parts("x | y 2>&1") == ["x | y 2>&1"]


def test_stale_output_fails_and_update_mode_rewrites_then_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _doc(tmp_path, "```console\n$ echo <version>\nold\n\n$ echo same\nsame\n```\n")
    doc = root / "README.md"
    parts = [docrules.Part(c, c.text, "fixture") for c in docblocks.commands(doc)]
    runs = [run_part(p, tmp_path, PLACEHOLDERS) for p in parts]
    monkeypatch.delenv(docrules.UPDATE_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="README.md:2: the output of `echo"):
        check_outputs(runs, PLACEHOLDERS)
    monkeypatch.setenv(docrules.UPDATE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="rewrote 1 output block"):
        check_outputs(runs, PLACEHOLDERS)
    assert doc.read_text() == "```console\n$ echo <version>\n<version>\n\n$ echo same\nsame\n```\n"
    monkeypatch.delenv(docrules.UPDATE_ENV)
    parts = [docrules.Part(c, c.text, "fixture") for c in docblocks.commands(doc)]
    check_outputs([run_part(p, tmp_path, PLACEHOLDERS) for p in parts], PLACEHOLDERS)


def test_ci_steps_are_read_from_the_script(tmp_path: Path) -> None:
    script = tmp_path / "run"
    script.write_text("#!/bin/bash\nset -e\ncd x\nbash tests/bootstrap\n"
                      'echo "== a"; python3 -m ruff check . && python3 -m mypy\n')
    script.write_text(script.read_text() + "python3 .ci/test-deps oldest\n")
    assert ci_steps(script) == ["tests/bootstrap", "python3 -m ruff check .", "python3 -m mypy",
                                ".ci/test-deps oldest"]


def test_rules_send_commands_where_they_can_run() -> None:
    cases = {
        "tests/bootstrap": "ci", "python3 -m pytest": "ci",
        "OFFWAKE_UPDATE_GOLDEN=1 python3 -m pytest tests/unit -k golden": "pytest",
        "kubectl offwake report offwake-<run>.jsonl.gz": "fixture",
        "kubectl offwake report - < x": None,
        "python3 -m kubectl_offwake demo --list-scenarios": "fixture",
        "python3 -m kubectl_offwake demo": "demo",
        "kubectl offwake local --comm envoy": "host",
        "kubectl offwake istio-proxy -n app": "lab",
        "pip install .": "install", "pipx install .": "install", "rm -rf /": None,
    }
    assert {text: docrules.group_of(text) for text in cases} == cases
