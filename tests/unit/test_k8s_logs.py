"""Following a collector's log into its sink: resuming after drops without loss or double
counting (the follower moves bytes; the sink drops what it already has by ``seq``)."""

from __future__ import annotations

import gzip
import io
import json
from typing import List

from kubectl_offwake.k8s.logs import LogFollower, read_chunks
from kubectl_offwake.pipeline.sink import StreamSink
from kubectl_offwake.wire import WireWriter


def _stream(snapshots: int = 4) -> bytes:
    out = io.StringIO()
    w = WireWriter(out)
    w.emit(dict(type="hello", schema=1, node="n1"))
    w.emit(dict(type="stack", id=1, frames=["a", "b"], kernel_depth=1))
    for snap in range(1, snapshots + 1):
        w.emit(dict(type="progress", elapsed_s=snap, switches=snap, wakeups=snap))
        w.emit(dict(type="wakeup", snap=snap, tid=7, pid=7, comm="envoy", state="blocked",
                    target_stack=1, count=1, total_us=100, max_us=100, blocked_us=100,
                    runq_us=0))
        w.emit(dict(type="snapshot", snap=snap, elapsed_s=snap))
    w.emit(dict(type="end", reason="duration", elapsed_s=snapshots, totals={}))
    return out.getvalue().encode()


def _chunks(data: bytes, size: int = 37):
    return [data[i:i + size] for i in range(0, len(data), size)]


def _following(path=None):
    """A sink that keeps every committed record, and a follower feeding it."""
    records: List[dict] = []
    sink = StreamSink("n1", str(path) if path else None, on_record=records.append)
    return sink, records, LogFollower(sink)


def test_whole_stream_in_odd_chunks(tmp_path):
    sink, records, follower = _following(tmp_path / "n1.jsonl.gz")
    data = _stream()
    follower.follow(lambda follow: iter(_chunks(data)), lambda: False, sleep=lambda s: None)
    sink.close()
    assert sink.ended
    assert sum(r["type"] == "wakeup" for r in records) == 4
    with gzip.open(tmp_path / "n1.jsonl.gz", "rb") as handle:
        assert handle.read() == data  # the stream saved as it came


def test_drops_mid_line_resume_from_the_start_without_duplicates(tmp_path):
    data = _stream(6)
    cuts = [len(data) // 5, len(data) // 2 + 3, len(data) - 10]  # each cut mid-line
    opened = []

    def open_stream(follow: bool):
        opened.append(follow)
        n = len(opened) - 1
        return iter(_chunks(data[: cuts[n]] if n < len(cuts) else data))

    path = tmp_path / "n1.jsonl"
    sink, records, follower = _following(path)
    reason = follower.follow(open_stream, lambda: False, sleep=lambda s: None)
    sink.close()
    assert reason == "end"
    assert len(opened) == 4 and follower.reconnects == 3
    wakeups = [r for r in records if r["type"] == "wakeup"]
    assert [r["snap"] for r in wakeups] == [1, 2, 3, 4, 5, 6]
    seqs = [json.loads(line)["seq"] for line in path.read_text().splitlines()]
    assert seqs == list(range(1, len(data.splitlines()) + 1))  # each line once, in order
    assert [r["type"] for r in records].count("progress") == 6
    assert [e.count for e in sink.finish().edges] == [6]  # counted once each


def test_stderr_lines_are_kept_apart_and_do_not_break_decoding():
    data = b"WARNING: bcc could not find headers\n" + _stream(1) + b"Traceback (most...\n"
    sink, _records, follower = _following()
    follower.follow(lambda follow: iter([data]), lambda: False, sleep=lambda s: None)
    assert sink.ended and sink.fatal is None
    assert sink.text_tail[0].startswith("WARNING") and "Traceback" in sink.text_tail[-1]


def test_container_exited_without_end_reads_the_rest_once():
    data = _stream(3)
    partial = data[: data.index(b'"type":"end"') - 20]
    calls = []

    def open_stream(follow: bool):
        calls.append(follow)
        return iter([partial])

    sink, records, follower = _following()
    reason = follower.follow(open_stream, lambda: True, sleep=lambda s: None)
    assert reason == "exited"
    assert calls == [True, False]
    assert not sink.ended
    assert sum(r["type"] == "wakeup" for r in records) == 2  # last snapshot committed


def test_a_stream_that_never_comes_back_stalls():
    data = _stream(1)[:50]
    _sink, _records, follower = _following()
    reason = follower.follow(lambda follow: iter([data]), lambda: False, sleep=lambda s: None)
    assert reason == "stalled"


def test_an_alien_stream_is_fatal_not_retried():
    sink, _records, follower = _following()
    data = b'{"type":"progress","seq":1,"elapsed_s":1}\n'
    reason = follower.follow(lambda follow: iter([data]), lambda: False, sleep=lambda s: None)
    assert reason == "error" and "hello" in (sink.fatal or "")


def test_read_chunks_returns_what_arrives():
    class Response:
        def __init__(self):
            self.parts = [b"ab", b"c\n", b""]
            self.closed = False

        def read1(self, size):
            return self.parts.pop(0)

        def close(self):
            self.closed = True

    response = Response()
    assert list(read_chunks(response)) == [b"ab", b"c\n"]
    assert response.closed
