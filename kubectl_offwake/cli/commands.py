"""The plugin's commands: one explicit list, in the order ``--help`` shows them.

The typer app (``cli/__init__``), the TARGET routing and shell completion all read this
list, so a command added here is known everywhere and a missing module fails at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Tuple

from . import cleanup, demo, local, report, setup, trace, version


@dataclass(frozen=True)
class Command:
    name: str
    function: Callable[..., Any]
    hidden: bool = False


COMMANDS: Tuple[Command, ...] = (
    Command("report", report.report),
    # ``kubectl offwake TARGET``: cli.route inserts this word, so it is not listed in help.
    Command("trace", trace.trace, hidden=True),
    Command("local", local.local),
    Command("demo", demo.demo),
    Command("setup", setup.setup),
    Command("cleanup", cleanup.cleanup),
    Command("version", version.version),
)
