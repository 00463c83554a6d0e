"""Completion logic without a cluster: what ``kubectl offwake <words> <TAB>`` offers.

The cluster-backed candidates (namespaces, pods, contexts) are tested against the lab in
tests/packaging/test_completion.py; here KUBECONFIG names a file that does not exist, so
those lookups find nothing, quietly.
"""

from __future__ import annotations

import pytest

from kubectl_offwake.cli import app
from kubectl_offwake.cli.commands import COMMANDS
from kubectl_offwake.cli.complete import DEFAULT, NO_FILE, command_specs, complete
from kubectl_offwake.cli.options import Format


@pytest.fixture(autouse=True)
def no_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))


def names(candidates):
    return [c.split("\t")[0] for c in candidates]


def test_first_word_offers_the_visible_commands_in_order():
    candidates, directive = complete([""])
    assert names(candidates) == [c.name for c in COMMANDS if not c.hidden]
    assert directive == NO_FILE
    assert all("\t" in c and c.split("\t")[1] for c in candidates)  # with a description


def test_a_prefix_narrows_the_commands():
    assert names(complete(["re"])[0]) == ["report"]
    assert names(complete(["d"])[0]) == ["demo"]


def test_options_come_from_the_typer_app():
    _, specs, _ = command_specs(app)
    offered = set(names(complete(["report", "x", "-"])[0]))
    expected = {n for o in specs["report"].options for n in o.names}
    assert offered == expected
    assert {"--format", "-o", "--out", "--help", "-h"} <= offered


def test_hidden_options_are_not_offered():
    offered = names(complete(["istio-proxy", "--"])[0])
    assert "--namespace" in offered and "--dry-run" in offered
    assert "--interval" not in offered


def test_options_already_given_are_not_offered_again():
    offered = names(complete(["istio-proxy", "-n", "app", "-"])[0])
    assert "--namespace" not in offered and "-n" not in offered
    assert "--context" in offered


def test_first_word_options_include_the_top_level_ones():
    offered = names(complete(["--"])[0])
    assert "--version" in offered and "--namespace" in offered


@pytest.mark.parametrize("words", [
    ["report", "x", "-o", ""], ["report", "x", "--format", ""], ["istio-proxy", "-o", ""],
    ["local", "--comm", "envoy", "--format", ""],
])
def test_format_values(words):
    candidates, directive = complete(words)
    assert candidates == [f.value for f in Format]
    assert directive == NO_FILE


def test_format_value_after_equals_and_with_a_prefix():
    assert complete(["report", "x", "--format=j"]) == (["json"], NO_FILE)
    assert complete(["report", "x", "-o", "s"]) == (["speedscope", "svg"], NO_FILE)


@pytest.mark.parametrize("words", [["report", ""], ["report", "-o", "json", ""],
                                   ["report", "x", "--out", ""], ["istio-proxy", "--save", ""],
                                   ["istio-proxy", "--kubeconfig", ""],
                                   ["istio-proxy", "--duration", ""]])
def test_file_arguments_and_free_values_leave_it_to_the_shell(words):
    assert complete(words) == ([], DEFAULT)


@pytest.mark.parametrize("words", [
    ["-n", ""], ["istio-proxy", "--context", ""], ["istio-proxy", "-n", "app", ""],
    ["deploy/"], ["report", "x", ""], ["version", ""],
])
def test_without_a_cluster_nothing_is_offered_and_nothing_fails(words):
    assert complete(words) == ([], NO_FILE)


def test_an_unknown_option_does_not_derail_completion():
    assert complete(["report", "--bogus", "x", "-o", "h"]) == (["html"], NO_FILE)
