"""Option types shared by the commands: formats, durations and the cluster options of every
command that talks to a cluster (docs/design.md §3.1)."""

from __future__ import annotations

from enum import Enum
from typing import Any, Dict, List, Optional

import typer

from ..collector.cli import duration_seconds
from ..errors import BadInput
from ..wire.schema import MAP_SIZE_OPTIONS


class Format(str, Enum):
    table = "table"
    json = "json"
    folded = "folded"
    speedscope = "speedscope"
    svg = "svg"
    html = "html"


def parse_duration(text: str, flag: str = "--duration") -> float:
    """Seconds from ``10``, ``10s``, ``2m``, ``500ms`` or ``1h`` (the collector's grammar)."""
    seconds = duration_seconds(str(text))
    if seconds is None:
        raise BadInput(f"{flag} {text!r} is not a duration; use seconds like 10, 10s or 2m")
    if seconds <= 0:
        raise BadInput(f"{flag} must be more than zero; use for example 10s")
    return seconds


def context_option() -> Any:
    """``--context``, as in kubectl."""
    return typer.Option(None, "--context", help="Kubeconfig context.")


def kubeconfig_option() -> Any:
    """``--kubeconfig``, as in kubectl."""
    return typer.Option(None, "--kubeconfig", help="Kubeconfig file.")


def collector_namespace_option(help: str) -> Any:
    """``--collector-namespace``, with what it means to the command."""
    from ..k8s.podspec import DEFAULT_COLLECTOR_NAMESPACE

    return typer.Option(DEFAULT_COLLECTOR_NAMESPACE, "--collector-namespace", help=help)


def map_size_option(flag: str) -> Any:
    """One of the collector's map sizes (:data:`MAP_SIZE_OPTIONS`), passed through as it is:
    what the loss finding tells a user to raise."""
    return typer.Option(None, flag, min=1, metavar="N", help=MAP_SIZE_OPTIONS[flag])


def map_size_args(stack_storage: Optional[int], agg: Optional[int], start: Optional[int],
                  oncpu: Optional[int]) -> List[str]:
    """The collector options for the map sizes given (in :data:`MAP_SIZE_OPTIONS` order)."""
    values = dict(zip(MAP_SIZE_OPTIONS, (stack_storage, agg, start, oncpu)))
    args: List[str] = []
    for flag, value in values.items():
        if value is not None:
            args += [flag, str(value)]
    return args


def client_record(command: str) -> Dict[str, Any]:
    """The ``client`` record a command's recordings carry: which command made them and which
    collector options it has, so advice about the recording names options that exist."""
    return {"type": "client", "command": command, "options": list(MAP_SIZE_OPTIONS)}
