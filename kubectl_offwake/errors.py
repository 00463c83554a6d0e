"""Errors a user sees: one sentence saying what went wrong and what to do.

Exit codes are a stable interface (docs/design.md §3.1): 1 the run failed, 2 bad usage or input.

Messages often quote what a node said (a pod name, a collector's last words, a path), so
this is where error text is made safe to print: every message is neutralized when the error
is made, and whatever prints ``str(error)`` prints no control character.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, TextIO

from .untrusted import neutralize

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """An error whose message is meant for the user, with the exit code it implies."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(neutralize(message))
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(UserError):
    """The user gave us something we cannot read or use (exit 2)."""

    exit_code = EXIT_USAGE


class RunFailed(UserError):
    """The cluster, the collector or the machine failed the run (exit 1)."""

    exit_code = EXIT_FAILED


def say(text: str, stream: Optional[TextIO] = None) -> None:
    """One line for the user on standard error (progress, notes, warnings), neutralized:
    such lines quote node and pod names and what a collector said."""
    out = sys.stderr if stream is None else stream
    out.write(neutralize(text) + "\n")
    out.flush()


def require_root(what: str) -> None:
    """``what`` (eBPF, network namespaces) needs root: say so before anything is started."""
    if os.geteuid() != 0:
        raise RunFailed(f"{what} needs root; run this command with sudo")
