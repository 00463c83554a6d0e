"""tests/packaging runs the plugin as installed (venv, pipx, single file, krew), not from
the checkout; its fixtures live in install_helpers (a module name no other test uses)."""

from install_helpers import installed, release  # noqa: F401
