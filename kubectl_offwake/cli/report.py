"""``kubectl offwake report INPUT``: re-analyse a saved recording or BCC offwaketime output."""

from __future__ import annotations

from typing import Optional

import typer

from ..analysis import analyze
from ..errors import say
from ..importers import load_input
from ..render import RenderOptions, guess_format, write_report
from .options import Format


def report(
    input_path: str = typer.Argument(
        ..., metavar="INPUT",
        help="A recording (.jsonl[.gz]) or BCC offwaketime output (text or -f); - for stdin.",
    ),
    fmt: Optional[Format] = typer.Option(
        None, "--format", "-o", help="Output format (default: from --out's suffix, else table)."
    ),
    out: Optional[str] = typer.Option(None, "--out", help="Write to this file instead of stdout."),
) -> None:
    """Analyse a saved recording or BCC offwaketime output and print the report."""
    recording = load_input(input_path)
    result = analyze(recording)
    chosen = fmt.value if fmt else guess_format(out)
    write_report(result, chosen, out, RenderOptions())
    for warning in recording.warnings:
        say(f"warning: {warning}")  # collector and input text: neutralized
