"""``kubectl offwake local (--pid PID | --comm NAME)``: trace a process on this machine.

For Envoy on a plain host (no Kubernetes): runs the collector here, shows live progress,
saves the recording, and prints the report as ``report`` would.
"""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import BadInput, say
from ..render import RenderOptions, guess_format, write_report
from .options import Format, client_record, map_size_args, map_size_option, parse_duration


def local(
    pid: Optional[int] = typer.Option(None, "--pid", help="Trace this process (all its threads)."),
    comm: Optional[str] = typer.Option(
        None, "--comm", help="Trace every process with this name (e.g. envoy)."
    ),
    duration: str = typer.Option("10s", "--duration", "-d", help="How long: 10, 10s, 2m."),
    fmt: Optional[Format] = typer.Option(
        None, "--format", "-o", help="Output format (default: from --out's suffix, else table)."
    ),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to this file."),
    save: Optional[str] = typer.Option(
        None, "--save",
        help="Save the recording here (default: offwake-NAME-TIME.jsonl.gz in this directory).",
    ),
    interval: str = typer.Option("1s", "--interval", help="Snapshot interval of the collector."),
    stack_storage_size: Optional[int] = map_size_option("--stack-storage-size"),
    agg_size: Optional[int] = map_size_option("--agg-size"),
    start_size: Optional[int] = map_size_option("--start-size"),
    oncpu_size: Optional[int] = map_size_option("--oncpu-size"),
) -> None:
    """Trace a process on this machine (needs root and BCC) and print the report."""
    if (pid is None) == (comm is None):
        raise BadInput("give exactly one of --pid PID or --comm NAME, e.g. --comm envoy")
    if pid is not None and pid <= 0:
        raise BadInput(f"--pid {pid} is not a process id; pass the PID of a running process")
    seconds = parse_duration(duration)
    interval_s = parse_duration(interval, "--interval")
    chosen = fmt.value if fmt else guess_format(out)
    target = ["--pid", str(pid)] if pid is not None else ["--comm", str(comm)]
    label = f"pid{pid}" if pid is not None else str(comm)

    from ..analysis import analyze
    from ..pipeline.local import raise_if_incomplete, run_local
    from ..pipeline.paths import default_save_path

    extra = map_size_args(stack_storage_size, agg_size, start_size, oncpu_size)
    save_path = save or default_save_path(label)
    result = run_local(target, seconds, save_path, interval_s=interval_s,
                       title=f"tracing {label}", source=label, extra=extra,
                       after_hello=[client_record("kubectl offwake local")])
    report = analyze(result.recording)
    write_report(report, chosen, out, RenderOptions())
    for warning in result.recording.warnings:
        say(f"warning: {warning}")  # collector and input text: neutralized
    if out:
        typer.echo(f"report written to {out}", err=True)
    typer.echo(
        f"recording saved to {save_path} (re-analyse with: kubectl offwake report {save_path})",
        err=True,
    )
    raise_if_incomplete(result.recording)
