"""The documented commands that trace this machine: the demo, and ``local`` against the
demo's Envoy. Root and eBPF, as CI runs them (tests/docs/docrules.py: groups ``demo`` and
``host``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .docrules import (
    PLACEHOLDERS,
    REPORT_MARK,
    Part,
    assert_ran,
    check_outputs,
    parts_of,
    run_part,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the demo and local traces need root and eBPF")


@pytest.mark.parametrize("part", parts_of("demo"), ids=lambda p: p.text)
def test_demo_command(part: Part, tmp_path: Path) -> None:
    ran = run_part(part, tmp_path, PLACEHOLDERS, timeout=600)
    assert_ran(ran)
    assert REPORT_MARK in ran.output, f"{part.command.where}: no report:\n{ran.output[-3000:]}"
    check_outputs([ran], PLACEHOLDERS)


def test_host_commands_trace_the_demos_envoy(tmp_path: Path) -> None:
    """``kubectl offwake local --comm envoy``, with the demo's mesh node (a real Envoy under
    load) up meanwhile; the report must include that Envoy."""
    from kubectl_offwake.demo.mesh import DemoMesh

    parts = parts_of("host")
    assert parts, "no documented `kubectl offwake local` command"
    runs = []
    with DemoMesh(load_seconds=600) as info:
        for part in parts:
            ran = run_part(part, tmp_path, PLACEHOLDERS, timeout=600)
            assert_ran(ran)
            assert REPORT_MARK in ran.output and f"({info.envoy_pid})" in ran.output, \
                f"{part.command.where}: no report of the demo's Envoy:\n{ran.output[-3000:]}"
            runs.append(ran)
    check_outputs(runs, PLACEHOLDERS)
