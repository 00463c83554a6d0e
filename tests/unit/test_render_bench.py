"""bench/report's generator makes recordings the importer reads back exactly.

The benchmark itself is a script for humans; this keeps its generator honest (so the
numbers it prints are about the edges and stacks it claims) and fast enough to run here.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

from kubectl_offwake.analysis import analyze
from kubectl_offwake.importers import load_input

BENCH = Path(__file__).resolve().parents[2] / "bench" / "report"


def _bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("offwake_bench_report", str(BENCH))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_generated_recording_round_trips(tmp_path: Path) -> None:
    bench = _bench()
    path = tmp_path / "h3-bench.jsonl.gz"
    info = bench.generate(str(path), 600)
    recording = load_input(str(path))
    assert not recording.warnings
    assert len(recording.edges) == info["edges"] == 600
    assert len(recording.stacks) == info["stacks"]
    report = analyze(recording)
    assert report.totals.edges == 600
    assert {w.category for w in report.wakeups} >= {"tcp-receive", "eventfd", "timer"}
    result = bench.run_case(str(path), ["table", "json", "folded", "speedscope"])
    assert result["edges"] == 600
    assert all(isinstance(result[f], float) for f in ("table", "json", "folded", "speedscope"))
