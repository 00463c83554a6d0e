"""What each documented command runs against, and how its pasted output is kept true.

Every command of the documents (tests/docs/docblocks.py reads them) is either **run by a
test** or **marked** with a trailing ``# needs WHAT`` comment naming what this machine lacks,
WHAT being one of :data:`NEEDS`. A command that is neither fails the docs test, and so does
a marked command that a rule could run here. Commands joined with ``&&`` or ``;`` are split
and each part is judged on its own (``tests/bootstrap && python3 -m pytest``: both are CI's).

The rules, first match wins, and the group that runs each:

====================  ============================================================  =======
group                 what runs, against what                                        where
====================  ============================================================  =======
``ci``                a step of ``.ci/run`` (CI runs it on a clean machine): the     tests/docs
                      docs test checks ``.ci/run`` runs exactly it, bootstrap first
``pytest``            a ``python3 -m pytest`` selection: collected (it must select   tests/docs
                      tests); CI runs the whole suite it is part of
``fixture``           ``report`` of fixture recordings, ``--help``, ``demo           tests/docs
                      --list-scenarios``, reading a recording: run here, no root
``scenario``          ``kubectl offwake demo --scenario NAME``: the run of NAME that     tests/
                      the scenario x finding test makes and checks (a 4 s trace, its  integration/
                      recording kept), shared so each scenario runs once (root)       test_scenario_
                                                                                      findings.py
``demo``              every other ``kubectl offwake demo ...``, as written (root,     tests/docs
                      eBPF)
``host``              ``kubectl offwake local ...`` against the demo's Envoy          tests/docs
``lab``               every other ``kubectl offwake ...``, ``image/build``: against   tests/e2e
                      the emulated cluster, its pods created as the docs name them
``install``           ``pip install ...``: into a fresh virtual environment          tests/packaging
====================  ============================================================  =======

Placeholders in angle brackets are filled per group (:data:`PLACEHOLDERS`): ``<version>``
is the plugin's, ``<run>`` a run id whose recording the fixture group provides,
``<registry>`` the lab's registry. A command with any other placeholder fails.

Output pasted into a ``console`` block is compared, line ends stripped, with what the
command prints (stdout and stderr together, as a terminal shows them), with the values put
in for placeholders turned back into the placeholders. ``OFFWAKE_UPDATE_DOCS=1`` rewrites
such blocks and then fails, like the golden files (tests/golden_files.py): review the diff
and run again without it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from kubectl_offwake import __version__

from .docblocks import REPO, Command, commands, documents, replace_lines

#: What a marked command may need, and why this machine does not have it.
NEEDS: Dict[str, str] = {
    "a real cluster": "the emulated cluster of tests/lab cannot stand in for it",
    "krew": "the krew binary is not installed here; tests/packaging/krew_like.py runs "
            "krew's install steps on the release's manifest and archive instead",
    "kprobes": "BCC's offwaketime attaches kprobes, which the test machine's kernel lacks",
}

UPDATE_ENV = "OFFWAKE_UPDATE_DOCS"
#: The table report's first section: a command that traces printed a report, not only its
#: set-up steps.
REPORT_MARK = "Where the off-CPU time went"

GROUPS = ("ci", "pytest", "fixture", "scenario", "demo", "host", "lab", "install")

_PLUGIN = r"(?:kubectl offwake|python3 -m kubectl_offwake)"
_ENV = r"(?:[A-Z_][A-Z0-9_]*=\S+ )*"


@dataclass(frozen=True)
class Rule:
    group: str
    pattern: str

    def matches(self, part: str) -> bool:
        return re.fullmatch(self.pattern, part) is not None


RULES: Tuple[Rule, ...] = (
    Rule("ci", r"(?:bash )?tests/bootstrap"),
    Rule("ci", r"python3 -m pytest"),
    Rule("ci", r"python3 -m ruff check \."),
    Rule("ci", r"python3 -m mypy"),
    Rule("ci", r"\.ci/test-deps oldest"),
    Rule("pytest", _ENV + r"python3 -m pytest .+"),
    Rule("fixture", _PLUGIN + r" demo --list-scenarios"),
    Rule("fixture", _PLUGIN + r" (?:report (?!-(?: |$)).+|--help|--version)"),
    Rule("fixture", r"zcat \S+(?: \| .+)?"),
    Rule("scenario", _PLUGIN + r" demo --scenario [a-z-]+"),
    Rule("demo", _PLUGIN + r" demo(?: .+)?"),
    Rule("host", _PLUGIN + r" local .+"),
    Rule("install", r"pipx? install .+"),
    Rule("lab", r"image/build --push \S+"),
    Rule("lab", r"kubectl offwake (?!report |local |demo\b).+"),
)

#: Recordings the fixture group puts in its working directory, by the name a doc uses.
FIXTURE_FILES: Dict[str, str] = {
    "offwake-<run>.jsonl.gz": "tests/data/classify/real-6.18-envoy-1.40.jsonl.gz",
    "capture.txt": "tests/data/offwaketime/text_delimited.txt",
}
#: Placeholder values every group knows.
PLACEHOLDERS: Dict[str, str] = {"<version>": __version__, "<run>": "5f3c9a01"}
_PLACEHOLDER = re.compile(r"<[a-z][a-z ]*>")
#: ``kubectl offwake POD -n NS``: a placeholder too, which no test can fill (write ``<pod>``
#: for one a rule fills, or mark the command).
_UPPER_WORD = re.compile(r"[A-Z][A-Z_]+")


@dataclass(frozen=True)
class Part:
    """One command of a documented line (a line may chain several with ``&&`` or ``;``)."""

    command: Command
    text: str
    group: Optional[str]  # None: marked as needing something, or no rule knows it


def split_parts(text: str) -> List[str]:
    """``a && b; c`` -> [a, b, c]; separators inside quotes are not ones."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    parts: List[List[str]] = [[]]
    try:
        tokens = list(lexer)
    except ValueError:
        return [text]
    for token in tokens:
        if token in ("&&", ";"):
            parts.append([])
        else:
            parts[-1].append(token)
    if len(parts) == 1:
        return [text]
    # split the original text at the same separators, so quoting stays as written
    pieces = re.split(r"\s*(?:&&|;)\s*", text)
    return [p.strip() for p in pieces if p.strip()] if len(pieces) == len(parts) else [text]


def group_of(text: str) -> Optional[str]:
    for rule in RULES:
        if rule.matches(text):
            return rule.group
    return None


def all_commands(root: Path = REPO) -> List[Command]:
    found: List[Command] = []
    for doc in documents(root):
        found.extend(commands(doc))
    return found


def all_parts(root: Path = REPO) -> List[Part]:
    parts: List[Part] = []
    for command in all_commands(root):
        for text in split_parts(command.text):
            group = None if command.need is not None else group_of(text)
            parts.append(Part(command, text, group))
    return parts


def parts_of(group: str, root: Path = REPO) -> List[Part]:
    """The documented commands a group runs, each distinct command once (first place)."""
    seen: Dict[str, Part] = {}
    for part in all_parts(root):
        if part.group == group and part.text not in seen:
            seen[part.text] = part
    return list(seen.values())


def console_parts(group: str, root: Path = REPO) -> List[Part]:
    """Every console-block command of a group (the same command pasted twice is checked
    twice: each paste must be true)."""
    return [p for p in all_parts(root) if p.group == group and p.command.console]


def problems(root: Path = REPO) -> List[str]:
    """Commands that are neither run nor properly marked, one sentence each."""
    out = []
    for part in all_parts(root):
        need = part.command.need
        where = part.command.where
        if need is not None:
            if need not in NEEDS:
                out.append(f"{where}: '# needs {need}' is not a known need; use one of "
                           f"{sorted(NEEDS)} (tests/docs/docrules.py NEEDS says why each)")
            elif group_of(part.text) is not None:
                out.append(f"{where}: {part.text!r} is marked '# needs {need}' but the "
                           f"{group_of(part.text)} group runs it here; drop the mark")
            continue
        if part.group is None:
            out.append(f"{where}: no test runs {part.text!r}; make it runnable against the "
                       "demo, the lab or a fixture (tests/docs/docrules.py RULES), or mark it "
                       "'# needs a real cluster'")
            continue
        unknown = set(_PLACEHOLDER.findall(part.text)) - set(PLACEHOLDERS) - {"<registry>"}
        unknown |= {w for w in re.split(r"[\s/=:,]+", part.text) if _UPPER_WORD.fullmatch(w)
                    and f"{w}=" not in part.text}
        if unknown:
            out.append(f"{where}: {part.text!r} has placeholders no test fills: "
                       f"{sorted(unknown)}; name real objects the test makes, or mark it")
    return out


# -- running -----------------------------------------------------------------------------------


def fill(text: str, values: Mapping[str, str]) -> str:
    """Put values in for placeholders; a placeholder left over is an error."""
    for key, value in values.items():
        text = text.replace(key, value)
    left = _PLACEHOLDER.findall(text)
    assert not left, f"no value for {left} in {text!r}"
    return text


def unfill(text: str, values: Mapping[str, str]) -> str:
    """Turn the values back into their placeholders (longest first)."""
    for key, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value, key)
    return text


def plugin_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """This checkout's package first, as the docs' commands assume an installed plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for name in ("OFFWAKE_DEBUG", "OFFWAKE_IMAGE", UPDATE_ENV, "COLUMNS"):
        env.pop(name, None)
    env.update(extra or {})
    return env


@dataclass
class Ran:
    part: Part
    command: str  # as run, placeholders filled
    returncode: int
    output: str  # stdout and stderr together


def run_part(part: Part, cwd: Path, values: Mapping[str, str],
             env: Optional[Mapping[str, str]] = None, timeout: float = 300) -> Ran:
    command = fill(part.text, values)
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=dict(env or plugin_env()),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return Ran(part, command, done.returncode, done.stdout)


def assert_ran(ran: Ran) -> None:
    assert ran.returncode == 0, (
        f"{ran.part.command.where}: `{ran.command}` exited {ran.returncode}:\n"
        f"{ran.output[-4000:]}")


def normalized(lines: Sequence[str]) -> List[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


def check_outputs(runs: Sequence[Ran], values: Mapping[str, str]) -> None:
    """Every console command's pasted output equals what it printed; in update mode the
    blocks are rewritten and the test fails."""
    stale: Dict[Path, List[Tuple[Tuple[int, int], List[str]]]] = {}
    messages = []
    for ran in runs:
        command = ran.part.command
        if not command.console:
            continue
        got = normalized(unfill(ran.output, values).split("\n"))
        if got != normalized(command.output):
            # keep the block's blank line before the next prompt, if it had one
            trailing = len(command.output) - len(normalized(command.output))
            stale.setdefault(command.doc, []).append(
                (command.output_lines, got + [""] * trailing))
            messages.append(f"{command.where}: the output of `{command.text}` changed")
    if not stale:
        return
    if os.environ.get(UPDATE_ENV) == "1":
        for doc, changes in stale.items():
            replace_lines(doc, changes)
        pytest.fail(f"rewrote {len(messages)} output block(s) ({UPDATE_ENV}=1): review "
                    f"`git diff -- README.md docs/` and run again without {UPDATE_ENV}",
                    pytrace=False)
    pytest.fail("\n".join(messages) + f"\nif that is intended, rewrite the blocks with "
                f"{UPDATE_ENV}=1 and review the diff", pytrace=False)


def fixture_workdir(path: Path) -> Path:
    """A working directory whose relative paths are the repository's (symlinks to its top
    level), plus the recordings of :data:`FIXTURE_FILES`; files a command writes land here."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name != ".git" and not (path / entry.name).exists():
            (path / entry.name).symlink_to(entry)
    for name, source in FIXTURE_FILES.items():
        target = path / fill(name, PLACEHOLDERS)
        if not target.exists():
            target.symlink_to(REPO / source)
    return path


# -- CI ----------------------------------------------------------------------------------------

CI_SCRIPT = REPO / ".ci" / "run"
#: ``bash tests/bootstrap`` is ``tests/bootstrap``; ``python3 .ci/test-deps`` is ``.ci/test-deps``.
_SCRIPT_RUNNER = re.compile(r"^(?:bash|python3) (?=[\w.]*/)")


def ci_steps(script: Path = CI_SCRIPT) -> List[str]:
    """The commands ``.ci/run`` runs, in order (``bash X`` and ``python3 X`` of a script read
    as ``X``; echo, set and cd left out)."""
    steps = []
    for line in script.read_text().split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in split_parts(line):
            if part.split(" ", 1)[0] in ("echo", "set", "cd"):
                continue
            steps.append(_SCRIPT_RUNNER.sub("", part))
    return steps
