"""``kubectl offwake demo``: a real Envoy in a small mesh node of its own, traced for a few
seconds, then the report — and nothing left behind. Needs root.

``--scenario NAME`` sets up one real condition instead of the mixed default (the table is
``demo/scenarios.py``); ``--list-scenarios`` prints that table and needs nothing."""

from __future__ import annotations

from typing import Optional

import typer

from ..demo.scenarios import BY_NAME, DEFAULT, SCENARIOS, Scenario
from ..errors import BadInput, say
from ..render import RenderOptions, guess_format, write_report
from .options import Format, client_record, map_size_args, map_size_option, parse_duration


def demo(
    duration: str = typer.Option("5s", "--duration", "-d", help="How long to trace: 5, 5s, 1m."),
    scenario: str = typer.Option(
        DEFAULT, "--scenario", "-s", metavar="NAME",
        help="The condition to set up (see --list-scenarios); mixed: many at once.",
    ),
    list_scenarios: bool = typer.Option(
        False, "--list-scenarios", help="List the scenarios and what each sets up, then exit."),
    fmt: Optional[Format] = typer.Option(
        None, "--format", "-o", help="Output format (default: from --out's suffix, else table)."
    ),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to this file."),
    keep_recording: Optional[str] = typer.Option(
        None, "--keep-recording", metavar="FILE",
        help="Also save the recording (.jsonl.gz) for `kubectl offwake report`.",
    ),
    stack_storage_size: Optional[int] = map_size_option("--stack-storage-size"),
    agg_size: Optional[int] = map_size_option("--agg-size"),
    start_size: Optional[int] = map_size_option("--start-size"),
    oncpu_size: Optional[int] = map_size_option("--oncpu-size"),
) -> None:
    """Run Envoy with a pilot-agent, kubelet probes, DNS, load and a noisy neighbour in a
    network namespace (or one scenario's condition); trace it and show why its threads
    were off the CPU."""
    if list_scenarios:
        typer.echo(scenario_listing())
        return
    chosen_scenario = _scenario(scenario)
    seconds = parse_duration(duration)
    chosen = fmt.value if fmt else guess_format(out)

    from ..analysis import analyze
    from ..demo.run import run_demo
    from ..pipeline.local import raise_if_incomplete

    result = run_demo(seconds, chosen_scenario, keep_recording,
                      collector_args=map_size_args(stack_storage_size, agg_size, start_size,
                                                   oncpu_size),
                      client=client_record("kubectl offwake demo"))
    report = analyze(result.recording)
    title = "kubectl offwake demo" + (f": {scenario}" if scenario != DEFAULT else "")
    write_report(report, chosen, out, RenderOptions(title=title))
    for warning in result.recording.warnings:
        say(f"warning: {warning}")  # collector and input text: neutralized
    if out:
        typer.echo(f"report written to {out}", err=True)
    if keep_recording:
        typer.echo(f"recording saved to {keep_recording}", err=True)
    raise_if_incomplete(result.recording)


def _scenario(name: str) -> Scenario:
    found = BY_NAME.get(name)
    if found is None:
        raise BadInput(f"--scenario {name!r} is not a scenario; choose one of "
                       f"{', '.join(BY_NAME)} (kubectl offwake demo --list-scenarios)")
    return found


def scenario_listing() -> str:
    """The scenario table as text: name, summary, what it sets up, expected findings."""
    lines = []
    for s in SCENARIOS:
        default = " (default)" if s.name == DEFAULT else ""
        lines.append(f"{s.name}{default}: {s.summary}")
        lines.append(f"    sets up: {'; '.join(s.sets_up())}")
        lines.append(f"    expected findings: {', '.join(s.expected) or 'none'}")
    return "\n".join(lines)
