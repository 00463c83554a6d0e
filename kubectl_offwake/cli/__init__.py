"""The ``kubectl-offwake`` command line (DESIGN.md §3.1): a typer app with thin commands.

``kubectl offwake TARGET`` has no subcommand word, so :func:`main` routes any first
argument that is not a known command to the hidden ``trace`` command.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ..errors import EXIT_USAGE, UserError
from . import report as report_cmd

app = typer.Typer(
    name="kubectl-offwake",
    help=(
        "Why were Envoy's threads off the CPU, and who woke them?\n\n"
        "  kubectl offwake istio-proxy -n app   (pods in `app` with an istio-proxy container)\n"
        "  kubectl offwake deploy/productpage -n app --duration 30s -o html --out incident.html\n"
        "  kubectl offwake report recording.jsonl.gz\n"
        "  kubectl offwake local --comm envoy\n"
        "  kubectl offwake demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("report")(report_cmd.report)

_COMMANDS = {"report", "local", "cleanup", "setup", "demo", "trace", "version"}


def _register_optional_commands() -> None:
    """Commands whose modules may pull heavier imports register here, lazily ordered."""
    from . import commands

    commands.register(app)


def route(argv: List[str]) -> List[str]:
    """Insert ``trace`` before a bare TARGET so typer sees a subcommand."""
    if not argv:
        return argv
    first = argv[0]
    if first in _COMMANDS or first in ("-h", "--help"):
        return argv
    return ["trace", *argv]


def main(argv: Optional[List[str]] = None) -> None:
    args = route(list(sys.argv[1:] if argv is None else argv))
    _register_optional_commands()
    try:
        result = app(args=args, prog_name="kubectl offwake", standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            sys.exit(130)
        raise
    if isinstance(result, int) and result:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns the code.
        if result == 130:
            typer.echo("interrupted", err=True)
        sys.exit(result)
    sys.exit(0)
