"""The ``kubectl-offwake`` command line: a typer app with thin commands.

``kubectl offwake TARGET`` has no subcommand word, so :func:`main` routes any first
argument that is not a command or a top-level option to the hidden ``trace`` command.
Errors reach the user as one ``error:`` line and an exit code, never a traceback: usage
errors (typer's, and :class:`~kubectl_offwake.errors.BadInput`) exit 2, failed runs 1.
"""

from __future__ import annotations

import sys
from typing import List, NoReturn, Optional

import typer

from .. import __version__
from ..errors import EXIT_USAGE, UserError
from .commands import COMMANDS

PROG = "kubectl offwake"

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

for _command in COMMANDS:
    app.command(_command.name, hidden=_command.hidden)(_command.function)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kubectl-offwake {__version__}")
        raise typer.Exit()


@app.callback()
def _top_level(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print the plugin's version and exit.",
    ),
) -> None:
    """Options before the command word (kubectl offwake --version)."""


# Words that stay in front: a command, or an option of the top level itself.
TOP_LEVEL_WORDS = frozenset(
    {command.name for command in COMMANDS} | {"--version", "-h", "--help"}
)


def route(argv: List[str]) -> List[str]:
    """Insert ``trace`` before a bare TARGET so typer sees a subcommand."""
    if not argv or argv[0] in TOP_LEVEL_WORDS:
        return argv
    return ["trace", *argv]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    sys.exit(code)


def _usage_error(exc: typer.TyperException) -> NoReturn:
    """typer's own errors (unknown option, missing argument, bad choice) as one line."""
    message = exc.format_message().strip()
    if not message:  # NoArgsIsHelpError: typer has printed the help already
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else PROG
    hint = f" See '{command} --help'." if exc.exit_code == EXIT_USAGE else ""
    _fail(f"error: {message.rstrip('.')}.{hint}", exc.exit_code)


def main(argv: Optional[List[str]] = None) -> NoReturn:
    args = route(list(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=args, prog_name=PROG, standalone_mode=False)
    except UserError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except typer.TyperException as exc:
        _usage_error(exc)
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted", 130)
    if isinstance(result, int) and result:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns the code.
        if result == 130:
            _fail("interrupted", 130)
        sys.exit(result)
    sys.exit(0)
