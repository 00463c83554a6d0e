"""``kubectl offwake report`` as a user runs it: the real console entry in a subprocess.

Bad input must end with exit code 2 and one ``error:`` line on stderr, never a traceback;
damaged-but-readable input must still produce a report, with the damage named on stderr.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from tests.unit.test_import_samples import EDGES, gzipped, recording_text

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "offwaketime"


def _run(args: List[str], stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "kubectl_offwake", "report", *args],
        input=stdin, capture_output=True, cwd=str(ROOT), env=env, timeout=120,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, (proc.returncode, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert proc.stdout == b""


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("h1-empty.jsonl", b"", "is empty"),
        ("h1-garbage.bin", random.Random(3).randbytes(4096), "binary data"),
        ("h1-future.jsonl",
         json.dumps({"type": "hello", "seq": 1, "schema": 2}).encode() + b"\n",
         "upgrade kubectl-offwake"),
        ("h1-cut-header.jsonl.gz", gzipped(recording_text())[:15], "before any data"),
        ("h1-prose.txt", b"nothing to see here\n", "neither a kubectl-offwake recording"),
        ("h1-all-corrupt.txt",
         b"Tracing blocked time (us) by user + kernel off-CPU and waker stack... "
         b"Hit Ctrl-C to end.\n\n    waker:           kubelet 606\n    tcp_v4_rcv\n"
         b"    target:          envoy 4182\n        12\n",
         "none of its 1 block(s)"),
    ],
    ids=["empty", "garbage", "newer-schema", "truncated-gzip-header", "prose", "all-corrupt"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, name, data, fragment):
    _assert_one_line_error(_run([_write(tmp_path, name, data)]), fragment)


def test_missing_file_exits_2(tmp_path):
    _assert_one_line_error(_run([str(tmp_path / "h1-absent.jsonl")]), "no such file")


def test_empty_stdin_exits_2():
    _assert_one_line_error(_run(["-"], stdin=b""), "standard input is empty")


def test_recording_report_as_json(tmp_path):
    path = _write(tmp_path, "h1-rec.jsonl.gz", gzipped(recording_text()))
    out = tmp_path / "h1-report.json"
    proc = _run([path, "--format", "json", "--out", str(out)])
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    report = json.loads(out.read_text())
    assert report["schema"] == "offwake.report/1"
    assert len(report["wakeups"]) == len(EDGES)
    assert sum(w["total_us"] for w in report["wakeups"]) == 2 * sum(e[8] for e in EDGES)
    # the collector's own warning reaches the user
    assert "warning: 2 stacks lost to hash collisions" in stderr


def test_offwaketime_text_from_stdin_renders_a_table():
    proc = _run(["-"], stdin=(DATA / "text_user_kernel.txt").read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    table = proc.stdout.decode()
    for word in ("kubelet", "pilot-agent", "wrk:worker_0", "swapper/0"):
        assert word in table
    assert proc.stderr == b""


@pytest.mark.parametrize("name", ["text_corrupt_blocks.txt", "folded_corrupt_lines.txt"])
def test_corrupt_blocks_still_report_and_warn(name):
    proc = _run([str(DATA / name), "--format", "json"])
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == ["warning: skipped 4 corrupt block(s)"]
    report = json.loads(proc.stdout)
    assert len(report["wakeups"]) in (3, 4)


def test_truncated_gzip_recording_reports_what_it_kept(tmp_path):
    data = gzipped(recording_text(snapshots=8))
    path = _write(tmp_path, "h1-cut.jsonl.gz", data[: len(data) * 3 // 4])
    proc = _run([path, "--format", "json"])
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "warning: the compressed input is truncated" in stderr
    report = json.loads(proc.stdout)
    assert report["wakeups"], "what was read before the cut must be reported"


def test_folded_capture_gzip_through_the_cli(tmp_path):
    path = _write(tmp_path, "h1-folded.gz", gzip.compress((DATA / "folded.txt").read_bytes()))
    proc = _run([path, "--format", "json"])
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["source"]["kind"] == "offwaketime-folded"
    assert len(report["wakeups"]) == 6
    preempted = [w for w in report["wakeups"] if w["waker"] is None]
    assert len(preempted) == 1 and preempted[0]["total_us"] == 18211
