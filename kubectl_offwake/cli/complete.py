"""Completion for ``kubectl offwake <TAB>``: kubectl >= 1.26 runs ``kubectl_complete-offwake``.

kubectl passes the words typed after ``offwake`` (the last one is the word being completed,
possibly empty) and expects cobra's ``__complete`` answer: candidates one per line, each
optionally followed by a tab and a description, then ``:<directive>``. Commands, options
and their choices come from the typer app itself; namespaces, pods and other TARGET names
come from the cluster through ``kubectl`` (the user's own kubeconfig, auth plugins and
flags), with short timeouts and no output at all when the cluster cannot be reached.
"""

from __future__ import annotations

import enum
import inspect
import subprocess
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import typer
import typer.main

from ..k8s.targets import KINDS
from . import app, route

# cobra's ShellCompDirective values: what the shell does besides offering the candidates
DEFAULT = 0  # it also completes file names (as cobra does for a value it knows nothing of)
NO_FILE = 4

#: The longest a completion waits for the cluster (kubectl's own request timeout is shorter).
CLUSTER_TIMEOUT_S = 3.0
REQUEST_TIMEOUT = "2s"

# kubectl's flags that pick the cluster: passed on to the kubectl that lists names
_CLUSTER_FLAGS = ("--context", "--kubeconfig")


@dataclass
class Option:
    names: List[str]
    help: str
    takes_value: bool
    choices: List[str] = field(default_factory=list)


@dataclass
class Spec:
    """What one command accepts, read from the typer app."""

    help: str
    options: List[Option]
    arguments: List[str]

    def option(self, name: str) -> Optional[Option]:
        return next((o for o in self.options if name in o.names), None)


def _enum_choices(function: Any, name: str) -> List[str]:
    """The values of an Enum-typed parameter (``--format``), from its annotation alone."""
    hint = getattr(function, "__annotations__", {}).get(name)
    if isinstance(hint, str):  # `from __future__ import annotations`
        hint = eval(hint, function.__globals__)  # as typing.get_type_hints does, for one
    for candidate in (hint, *typing.get_args(hint)):
        if inspect.isclass(candidate) and issubclass(candidate, enum.Enum):
            return [str(member.value) for member in candidate]
    return []


def command_specs(app: typer.Typer) -> Tuple[Spec, Dict[str, Spec], List[str]]:
    """(top level, visible and hidden commands by name, visible command names in order)."""
    group: Any = typer.main.get_command(app)
    top = typer.Context(group, info_name="kubectl offwake", **group.context_settings)

    def spec(command: Any, function: object) -> Spec:
        options, arguments = [], []
        ctx = top if command is group else typer.Context(command, parent=top)
        for param in command.get_params(ctx):
            if param.param_type_name == "argument":
                arguments.append(param.name)
            elif not param.hidden:
                choices = _enum_choices(function, param.name) if function else []
                options.append(Option(list(param.opts) + list(param.secondary_opts),
                                      (param.help or "").split("\n")[0],
                                      not param.is_flag, choices))
        return Spec(command.get_short_help_str(80), options, arguments)

    commands: Dict[str, Spec] = {}
    visible: List[str] = []
    subcommands: Dict[str, Any] = getattr(group, "commands", {})
    for info in app.registered_commands:
        name = str(info.name)
        commands[name] = spec(subcommands[name], info.callback)
        if not subcommands[name].hidden:
            visible.append(name)
    return spec(group, None), commands, visible


def _kubectl_names(resource: str, namespace: Optional[str], flags: Sequence[str]) -> List[str]:
    """Names of ``resource`` from the cluster, or nothing (quietly) when it cannot answer."""
    cmd = ["kubectl", "get", resource, "-o", "name", f"--request-timeout={REQUEST_TIMEOUT}",
           *flags]
    if namespace:
        cmd += ["--namespace", namespace]
    return [line.split("/", 1)[-1] for line in _quiet(cmd)]


def _contexts(flags: Sequence[str]) -> List[str]:
    kubeconfig = [f for f in flags if f.startswith("--kubeconfig=")]
    return _quiet(["kubectl", "config", "get-contexts", "-o", "name", *kubeconfig])


def _quiet(cmd: List[str]) -> List[str]:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, timeout=CLUSTER_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    # names from a cluster go to the user's shell: only plain, printable words
    return [word for word in (line.strip() for line in proc.stdout.splitlines())
            if word and word.isprintable() and not any(c.isspace() for c in word)]


@dataclass
class Typed:
    """What the words before the current one say: option values, options used, arguments."""

    values: Dict[str, str] = field(default_factory=dict)
    used: List[str] = field(default_factory=list)
    arguments: List[str] = field(default_factory=list)
    pending: Optional[Option] = None  # the last word was an option still waiting for its value


def _read(words: Sequence[str], spec: Spec) -> Typed:
    typed = Typed()
    for word in words:
        if typed.pending is not None:
            typed.values[typed.pending.names[0]] = word
            typed.pending = None
        elif word.startswith("-") and word != "-":
            name, has_value, value = word.partition("=")
            option = spec.option(name)
            if option is None:
                continue
            typed.used.extend(option.names)
            if option.takes_value:
                if has_value:
                    typed.values[option.names[0]] = value
                else:
                    typed.pending = option
        else:
            typed.arguments.append(word)
    return typed


def complete(words: Sequence[str]) -> Tuple[List[str], int]:
    """Candidates and the cobra directive for ``kubectl offwake WORDS...``."""
    top, commands, visible = command_specs(app)
    words = list(words) or [""]
    before, current = words[:-1], words[-1]
    if not before and not current.startswith("-"):
        first = [f"{name}\t{commands[name].help}" for name in visible if name.startswith(current)]
        return first + _targets(current, Typed()), NO_FILE
    routed = route(before) if before else ["trace"]
    command, rest = routed[0], routed[1:]
    spec = commands[command]
    if not before:  # the first word: TARGET's options or the top level's (--version)
        extra = [o for o in top.options if not spec.option(o.names[0])]
        spec = Spec(spec.help, spec.options + extra, spec.arguments)
    typed = _read(rest, spec)

    if typed.pending is not None:
        return _values(typed.pending, current, typed)
    if current.startswith("-"):
        name, has_value, value = current.partition("=")
        option = spec.option(name)
        if has_value and option is not None:
            return _values(option, value, typed)
        return _options(spec, current, typed.used), NO_FILE
    if len(typed.arguments) >= len(spec.arguments):
        return [], NO_FILE
    if command == "trace":
        return _targets(current, typed), NO_FILE
    return [], DEFAULT  # report INPUT: a file name


def _options(spec: Spec, current: str, used: Sequence[str]) -> List[str]:
    out = []
    for option in spec.options:
        if any(name in used for name in option.names):
            continue
        out += [f"{name}\t{option.help}" for name in option.names if name.startswith(current)]
    return out


def _cluster_flags(typed: Typed) -> List[str]:
    return [f"{flag}={typed.values[flag]}" for flag in _CLUSTER_FLAGS if flag in typed.values]


def _values(option: Option, current: str, typed: Typed) -> Tuple[List[str], int]:
    name = option.names[0]
    if option.choices:
        return [c for c in option.choices if c.startswith(current)], NO_FILE
    if name == "--namespace":
        found = _kubectl_names("namespaces", None, _cluster_flags(typed))
    elif name == "--context":
        found = _contexts(_cluster_flags(typed))
    else:
        return [], DEFAULT
    return [n for n in found if n.startswith(current)], NO_FILE


def _targets(current: str, typed: Typed) -> List[str]:
    """Pod names, or ``KIND/NAME`` once a kind prefix is typed (``deploy/``)."""
    prefix, slash, partial = current.rpartition("/")
    kind = KINDS.get(prefix.lower()) if slash else "pod"
    if kind is None:
        return []
    names = _kubectl_names(kind, typed.values.get("--namespace"), _cluster_flags(typed))
    lead = f"{prefix}/" if slash else ""
    return [f"{lead}{n}" for n in names if n.startswith(partial)]


def main(words: Sequence[str]) -> int:
    """Print the answer kubectl expects; never an error (a failed completion is no candidates)."""
    candidates, directive = complete(words)
    for candidate in candidates:
        typer.echo(candidate)
    typer.echo(f":{directive}")
    return 0
