"""The wire stream (kubectl_offwake/wire): writing, reading, and what a reader does with
damaged, repeated or foreign input (docs/design.md §3.2)."""

from __future__ import annotations

import io
import json

import pytest

from kubectl_offwake.importers.source import read_input
from kubectl_offwake.wire import (
    SCHEMA_VERSION,
    StreamDecoder,
    WireError,
    WireWriter,
    read_records,
)
from tests.unit.test_import_samples import gzipped, recording_records, recording_text


def _types(records):
    return [r["type"] for r in records]


def test_writer_numbers_records_and_writes_compact_lines():
    buffer = io.StringIO()
    writer = WireWriter(buffer)
    writer.emit(dict(type="hello", schema=SCHEMA_VERSION, kernel="6.1.0"))
    writer.emit(dict(type="log", level="info", message="ready", extra={1, 2}))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert " " not in lines[0]  # compact separators keep kubelet's log budget
    first, second = (json.loads(line) for line in lines)
    assert first == {"type": "hello", "seq": 1, "schema": SCHEMA_VERSION, "kernel": "6.1.0"}
    assert second["seq"] == 2 and sorted(second["extra"]) == [1, 2]
    assert writer.seq == 2


def test_round_trip_keeps_every_committed_record_in_order():
    sent = recording_records()
    result = read_records(recording_text().splitlines())
    assert result.warnings == []
    assert result.ended
    by_seq = sorted(result.records, key=lambda r: r["seq"])
    assert [r["seq"] for r in by_seq] == list(range(1, len(sent) + 1))
    for (rtype, fields), got in zip(sent, by_seq):
        assert got["type"] == rtype
        assert {k: got[k] for k in fields} == json.loads(json.dumps(fields))
    # Deltas are released with the snapshot that commits them, never before it.
    released = _types(result.records)
    first_snapshot = released.index("snapshot")
    assert released.index("wakeup") < first_snapshot
    assert released.index("progress") < released.index("wakeup")


def test_gzip_recording_reads_like_plain(tmp_path):
    path = tmp_path / "h1-rec.jsonl.gz"
    path.write_bytes(gzipped(recording_text()))
    result = read_records(read_input(str(path)).text.splitlines())
    plain = read_records(recording_text().splitlines())
    assert result.records == plain.records
    assert result.warnings == []


def test_reconnected_log_stream_repeats_are_dropped_by_seq():
    lines = recording_text().splitlines()
    # A log follower reconnects after the 20th line and receives the stream from the start.
    replayed = lines[:20] + lines + lines[-5:]
    assert read_records(replayed).records == read_records(lines).records


def test_unknown_record_types_are_skipped_and_counted():
    lines = recording_text().splitlines()
    lines.insert(3, json.dumps({"type": "h1-future-kind", "seq": 3, "payload": [1, 2]}))
    # Renumber so the inserted line does not collide with a real seq.
    renumbered = []
    for i, line in enumerate(lines, 1):
        record = json.loads(line)
        record["seq"] = i
        renumbered.append(json.dumps(record))
    decoder = StreamDecoder()
    out = []
    for line in renumbered:
        out.extend(decoder.feed(line))
    assert "h1-future-kind" not in _types(out)
    assert decoder.skipped_types == {"h1-future-kind": 1}
    assert len(out) == len(lines) - 1


def test_newer_schema_is_refused_with_an_upgrade_hint():
    line = json.dumps({"type": "hello", "seq": 1, "schema": SCHEMA_VERSION + 1})
    with pytest.raises(WireError, match=r"schema 2 .*upgrade kubectl-offwake"):
        read_records([line])


def test_stream_not_starting_with_hello_is_refused():
    with pytest.raises(WireError, match="instead of 'hello'"):
        read_records([json.dumps({"type": "wakeup", "seq": 1, "tid": 1})])


def test_first_line_not_json_is_refused():
    with pytest.raises(WireError, match="line 1 is not JSON"):
        read_records(["Tracing blocked time (us) by user + kernel off-CPU and waker stack"])


def test_empty_stream_is_refused():
    with pytest.raises(WireError, match="empty"):
        read_records(["", "   "])


def test_truncated_stream_keeps_last_whole_snapshot_and_warns():
    lines = recording_text().splitlines()
    # Cut in the middle of the second snapshot's wakeups, mid-line.
    second_snapshot_start = next(
        i for i, line in enumerate(lines) if '"snap":2' in line and '"wakeup"' in line
    )
    cut = lines[: second_snapshot_start + 3] + [lines[second_snapshot_start + 3][:25]]
    result = read_records(cut)
    wakeups = [r for r in result.records if r["type"] == "wakeup"]
    assert {r["snap"] for r in wakeups} == {1}
    assert _types(result.records)[-1] == "snapshot"
    assert not result.ended
    assert any("stops mid-snapshot" in w for w in result.warnings)
    assert any("malformed" in w for w in result.warnings)  # the half line


def test_stream_without_end_but_on_a_snapshot_boundary_warns():
    lines = recording_text(end=False).splitlines()
    result = read_records(lines)
    assert not result.ended
    assert any("no 'end' record" in w for w in result.warnings)


def test_truncated_gzip_keeps_what_was_decompressed(tmp_path):
    data = gzipped(recording_text(snapshots=8))
    path = tmp_path / "h1-cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 9 // 10])
    text = read_input(str(path))
    assert any("truncated" in w or "damaged" in w for w in text.warnings)
    result = read_records(text.text.splitlines())
    assert not result.ended
    assert _types(result.records)[0] == "hello"
    # Whole snapshots before the cut survive; the one the cut went through does not.
    snaps = [r["snap"] for r in result.records if r["type"] == "snapshot"]
    assert snaps and snaps == list(range(1, len(snaps) + 1)) and len(snaps) < 8
    assert {r["snap"] for r in result.records if r["type"] == "wakeup"} == set(snaps)
