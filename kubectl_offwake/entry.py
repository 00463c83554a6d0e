"""The console-script entries: kept import-light so Ctrl-C during start-up exits quietly.

``kubectl-offwake`` is the plugin; ``kubectl_complete-offwake`` is what kubectl >= 1.26 runs
for ``kubectl offwake <TAB>``. ``kubectl-offwake __complete WORDS...`` answers the same way,
so the single-file plugin (one executable) can serve completion through a two-line script.

The single file runs under whatever python3 is on PATH, so this module still parses on old
Pythons (no ``from __future__ import annotations``) and tells the user what to do.
"""

import sys
from typing import List

COMPLETE_WORD = "__complete"
#: pyproject's requires-python (a unit test keeps them equal). pip enforces it for installs;
#: the single-file plugin runs under whatever python3 is on PATH, so it is checked here.
MIN_PYTHON = (3, 10)


def _check_python() -> None:
    if sys.version_info < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        sys.stderr.write(f"error: kubectl-offwake needs Python >= {need}, and {sys.executable} "
                         f"is {sys.version.split()[0]}; put a newer python3 first on PATH\n")
        sys.exit(1)


def main() -> None:
    _check_python()
    args = sys.argv[1:]
    if args[:1] == [COMPLETE_WORD]:
        _complete(args[1:])
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()


def complete() -> None:
    _check_python()
    _complete(sys.argv[1:])


def _complete(words: List[str]) -> None:
    try:
        from .cli.complete import main as complete_main

        code = complete_main(words)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
