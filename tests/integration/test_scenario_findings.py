"""Scenario × finding: every demo scenario raises exactly its findings, and the runbook
quotes each one's real report.

For every scenario of the table (``demo/scenarios.py``, the mixed default included) one
root test runs ``kubectl offwake demo --scenario NAME`` for a short trace and asserts that
the set of warning and critical findings is exactly the scenario's ``expected``: ``healthy``
raises none, and nothing else fires. The herd is held against Envoy's own count of
connections (``downstream_cx_total``) as ground truth: on one shared listening socket the
workers got more accept wakeups than Envoy accepted connections and the herd fires; on a
socket per worker (``connection-churn``) about one wakeup per connection and it does not.

The same run is rendered as the terminal report, and its findings section (warnings and
criticals, as printed) is what docs/runbook.md quotes for that scenario between
``<!-- report: NAME -->`` markers. The test compares the two with numbers and plural
endings masked, so a rerun that measures other numbers passes and one that raises other
findings or words them differently fails. ``OFFWAKE_UPDATE_RUNBOOK=1`` rewrites the blocks
from this run and then fails, as the golden files do (tests/golden_files.py): review the
diff and run again without it.

Each scenario runs once per session (a module fixture keeps the runs), so the tests of a
scenario share one demo; that run is also how the documented ``kubectl offwake demo
--scenario NAME`` commands run (the docs test's ``scenario`` group, tests/docs/docrules.py):
the command as written, with a 4 s trace and its recording kept. Its JSON report is made
from that recording by the JSON renderer, as ``report -o json`` of it would be.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Callable, Dict, List, Set

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.demo import envoy_config
from kubectl_offwake.demo.run import LABELS
from kubectl_offwake.demo.scenarios import BY_NAME, SCENARIOS, names
from kubectl_offwake.importers import load_input
from kubectl_offwake.render import RenderOptions, render
from tests.docs.docrules import REPORT_MARK, Part, parts_of
from tests.integration.demo_helpers import ScenarioRun, assert_nothing_left, run_demo_cli

TRACE = "4s"
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
UPDATE_ENV = "OFFWAKE_UPDATE_RUNBOOK"
#: The width the runbook's blocks are rendered at (the terminal report's design width).
WIDTH = 100
SERIOUS = ("warning", "critical")


def root_demo(test: Callable) -> Callable:
    """Marks a test that runs the demo: root, slow, skipped without root."""
    for mark in (pytest.mark.root, pytest.mark.slow,
                 pytest.mark.skipif(os.geteuid() != 0, reason="the demo needs root")):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ScenarioRun]:
    """``scenario(NAME)``: that scenario's finished run, made the first time it is asked for.
    ``live["stdout"]`` is what the command printed, ``live["table"]`` its terminal report at
    :data:`WIDTH` columns."""
    done: Dict[str, ScenarioRun] = {}

    def run(name: str) -> ScenarioRun:
        if name not in done:
            workdir = tmp_path_factory.mktemp(name)
            kept = workdir / f"{name}.jsonl.gz"
            finished = run_demo_cli(["--scenario", name, "--duration", TRACE,
                                     "--keep-recording", str(kept)], workdir)
            assert finished.returncode == 0, finished.stderr
            report = analyze(load_input(str(kept)))
            text, as_json = io.StringIO(), io.StringIO()
            render(report, "json", as_json, RenderOptions())
            result = ScenarioRun(json.loads(as_json.getvalue()), finished.steps)
            render(report, "table", text, RenderOptions(width=WIDTH))
            result.live["table"] = text.getvalue()
            result.live["stdout"] = finished.stdout
            envoy_pids = {w["target"]["pid"] for w in result.report["wakeups"]}
            assert_nothing_left(finished.pid, finished.steps.pids() | envoy_pids)
            done[name] = result
        return done[name]

    return run


def serious(report: dict) -> Set[str]:
    return {f["id"] for f in report["findings"] if f["severity"] in SERIOUS}


def said(report: dict) -> str:
    """The findings and the numbers they rest on, for a failure message."""
    lines = [f"{f['severity']} {f['id']}: {f['text']}" for f in report["findings"]]
    lines += [f"envoy counted {row}" for s in report["envoy_stats"]
              for row in s.get("beside_wakeups", [])]
    return "\n".join(lines)


@root_demo
@pytest.mark.parametrize("name", names())
def test_scenario_raises_exactly_its_findings(name: str, scenario) -> None:
    run = scenario(name)
    assert serious(run.report) == set(BY_NAME[name].expected), said(run.report)
    for finding in run.report["findings"]:
        if finding["id"] == "noisy-neighbour":  # and it names the scenario's own hog
            assert finding["evidence"]["neighbour"] == LABELS["cpu-hog"], said(run.report)


def _herd(run: ScenarioRun) -> tuple:
    """(accept wakeups per connection Envoy accepted, the herd finding or None)."""
    inbound = f"0.0.0.0:{envoy_config.INBOUND_PORT}"
    connections = sum(run.delta(f"listener.{address.replace(':', '_')}.downstream_cx_total")
                      for address in run.stats["listeners"])
    assert connections >= 50, run.stats  # the churn really made connections
    assert inbound in run.stats["listeners"]
    found = [f for f in run.report["findings"] if f["id"] == "accept-herd"]
    return run.accept_wakeups() / connections, (found[0] if found else None), connections


@root_demo
@pytest.mark.parametrize("part", parts_of("scenario"), ids=lambda p: p.text)
def test_documented_scenario_command(part: Part, scenario) -> None:
    """A documented ``demo --scenario NAME`` runs as this module's run of NAME and prints a
    report."""
    name = part.text.split("--scenario ")[1]
    assert name in names(), f"{part.command.where}: no scenario {name!r}"
    stdout = scenario(name).live["stdout"]
    assert REPORT_MARK in stdout, f"{part.command.where}: no report:\n{stdout[-3000:]}"


@root_demo
def test_herd_fires_on_a_shared_listener_against_envoys_connection_count(scenario) -> None:
    run = scenario("accept-herd")
    ratio, herd, connections = _herd(run)
    assert ratio >= 1.5, said(run.report)  # each connection woke both workers
    assert herd is not None, said(run.report)
    assert herd["evidence"]["connections"] == connections
    assert herd["evidence"]["shared_listeners"] == [f"0.0.0.0:{envoy_config.INBOUND_PORT}"]


@root_demo
def test_no_herd_on_per_worker_listeners_against_envoys_connection_count(scenario) -> None:
    run = scenario("connection-churn")
    ratio, herd, _ = _herd(run)
    assert ratio <= 1.2, said(run.report)  # one worker woken per connection
    assert herd is None, said(run.report)


@root_demo
@pytest.mark.parametrize("name", names())
def test_runbook_quotes_the_scenarios_real_report(name: str, scenario) -> None:
    check_runbook_block(name, findings_block(scenario(name).live["table"]))


# -- the runbook's blocks -----------------------------------------------------------------------

def findings_block(table: str) -> str:
    """The terminal report's findings section, warnings and criticals only (info findings
    depend more on the machine than on the scenario)."""
    lines = table.splitlines()
    start = lines.index("Findings")
    kept: List[str] = [lines[start]]
    keep = True
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if not line.startswith("      "):  # a finding's first line: its mark and title
            keep = line.startswith(("  !! ", "  !  "))
        if keep:
            kept.append(line)
    if len(kept) == 1:
        kept.append("  Nothing at warning or critical level.")
    return "\n".join(kept) + "\n"


_BLOCK = re.compile(r"(<!-- report: (?P<name>[a-z-]+) -->\n```text\n)(?P<body>.*?)(```\n"
                    r"<!-- /report -->)", re.S)
_NUMBER = re.compile(r"\d[\d,.]*(?:\s?(?:µs|ms|s|%|×))?")
#: What one run prints and the next may not, by the numbers rather than by the code: how
#: many more threads or processes there were, whether preemptions split a stall, what the
#: watchdog had counted by the end, an optional second fact. (The severity mark of a share
#: near its critical value varies too: ``!!`` compares as ``!``.)
_VARIES = [re.compile(p) for p in (
    r" \(and # more \w+\)",
    r" of the # other processes held it",
    r" \(its longest single run was #: preemptions split the rest\)",
    r"; Envoy's watchdog counted (# miss(es)? of its # deadline for this thread"
    r"|no miss \(it counts stalls of # and more\))",
    r"; workers waited # on the access-log lock",
    r" Envoy counted # flushes by its flush timer \(filesystem\.flushed_by_timer\)\.",
)]
#: The end of a word that a count makes plural ("miss"/"misses", "thread"/"threads"):
#: every trailing s and e, a canonical form rather than English.
_PLURAL = re.compile(r"(?<=\w)[se]+\b")


def masked(text: str) -> str:
    """Text as compared: numbers (with their units) masked, plural endings and line
    breaks dropped, so two runs of one scenario compare equal."""
    text = " ".join(_NUMBER.sub("#", text).split())
    for varies in _VARIES:
        text = varies.sub("", text)
    return _PLURAL.sub("", text.replace("!!", "!"))


def runbook_blocks(doc: str) -> Dict[str, str]:
    return {m.group("name"): m.group("body") for m in _BLOCK.finditer(doc)}


def check_runbook_block(name: str, block: str) -> None:
    doc = RUNBOOK.read_text()
    if name not in runbook_blocks(doc):
        pytest.fail(f"docs/runbook.md has no '<!-- report: {name} -->' block", pytrace=False)
    if os.environ.get(UPDATE_ENV) == "1":
        RUNBOOK.write_text(_BLOCK.sub(
            lambda m: m.group(1) + (block if m.group("name") == name else m.group("body"))
            + m.group(4), doc))
        pytest.fail(f"rewrote the {name} block of docs/runbook.md ({UPDATE_ENV}=1): review "
                    f"`git diff docs/runbook.md` and run again without {UPDATE_ENV}",
                    pytrace=False)
    quoted = runbook_blocks(doc)[name]
    assert masked(quoted) == masked(block), (
        f"docs/runbook.md quotes another report for {name} than this run gave; if the "
        f"change is intended, regenerate with {UPDATE_ENV}=1.\nquoted:\n{quoted}\nnow:\n{block}")


def test_runbook_has_one_block_per_scenario() -> None:
    assert sorted(runbook_blocks(RUNBOOK.read_text())) == sorted(s.name for s in SCENARIOS)


def test_masking_keeps_words_and_drops_numbers() -> None:
    a = "  !! wrk:worker_1 used 128 ms of CPU (and 1 more thread); 2 misses in 5.04 s"
    b = "  !  wrk:worker_0 used 1.30 s of CPU; 1 miss in\n      4.9 s"
    assert masked(a) == masked(b)
    assert masked(a) != masked(a.replace("CPU", "GPU"))
    assert masked(a) != masked(a.replace("wrk:", "main:"))


def test_findings_block_keeps_warnings_and_criticals_as_printed() -> None:
    table = ("x\n\nFindings\n  !! Noisy neighbour: hog\n      The worker threads spent\n"
             "      more text\n  i  Most wakeups come from wrk\n      wrk caused 70%\n"
             "  !  DNS refresh storm\n      DNS answers\n\nHeaviest wake paths\n")
    assert findings_block(table) == ("Findings\n  !! Noisy neighbour: hog\n"
                                     "      The worker threads spent\n      more text\n"
                                     "  !  DNS refresh storm\n      DNS answers\n")
    assert findings_block("Findings\n  Nothing stands out.\n\n") == (
        "Findings\n  Nothing at warning or critical level.\n")
