"""``kubectl offwake demo``: a real Envoy in a small mesh node of its own, traced for a few
seconds, then the report — and nothing left behind. Needs root."""

from __future__ import annotations

from typing import Optional

import typer

from ..render import RenderOptions, guess_format, write_report
from .options import Format, parse_duration


def demo(
    duration: str = typer.Option("5s", "--duration", "-d", help="How long to trace: 5, 5s, 1m."),
    fmt: Optional[Format] = typer.Option(
        None, "--format", "-o", help="Output format (default: from --out's suffix, else table)."
    ),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to this file."),
    keep_recording: Optional[str] = typer.Option(
        None, "--keep-recording", metavar="FILE",
        help="Also save the recording (.jsonl.gz) for `kubectl offwake report`.",
    ),
) -> None:
    """Run Envoy with a pilot-agent, kubelet probes, DNS, load and a noisy neighbour in a
    network namespace; trace it and show why its threads were off the CPU."""
    seconds = parse_duration(duration)
    chosen = fmt.value if fmt else guess_format(out)

    from ..analysis import analyze
    from ..demo.run import run_demo
    from ..localrun import raise_if_incomplete

    result = run_demo(seconds, keep_recording)
    report = analyze(result.recording)
    write_report(report, chosen, out, RenderOptions(title="kubectl offwake demo"))
    for warning in result.recording.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if out:
        typer.echo(f"report written to {out}", err=True)
    if keep_recording:
        typer.echo(f"recording saved to {keep_recording}", err=True)
    raise_if_incomplete(result.recording)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
