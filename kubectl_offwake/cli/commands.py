"""Registers the commands other than ``report`` (kept apart so each stays one module)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Each command module, when it exists, exposes ``register(app)``."""
    import importlib

    for name in ("trace", "local", "demo", "cleanup", "setup", "version"):
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue
            raise
        module.register(app)
