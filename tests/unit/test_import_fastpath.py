"""The importer's fast paths agree with its careful paths on any input.

``RecordingBuilder._wakeup`` reads a record whose ``state`` names one of the two wakeup
shapes of wire/schema.py with one getter and one type check, and ``StreamDecoder.records``
decodes common lines inline; both hand anything odd to the careful code
(``_wakeup_careful``, ``feed``). These properties feed near-collector records with random
damage to both and require identical results.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubectl_offwake.importers.builder import RecordingBuilder
from kubectl_offwake.wire import StreamDecoder, WireError

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class CarefulBuilder(RecordingBuilder):
    """The reference: every wakeup through the field-by-field path."""

    def _wakeup(self, record: dict) -> None:
        self._wakeup_careful(record)


_ODD = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(-1, 3),
                 st.sampled_from(["", "1", "x", "blocked", "preempted"]),
                 st.lists(st.integers(0, 2), max_size=2), st.just({"a": 1}))


@st.composite
def _wakeup(draw: Any) -> Dict[str, Any]:
    preempted = draw(st.booleans())
    rec: Dict[str, Any] = {
        "type": "wakeup", "seq": 0, "snap": 1,
        # Few identities, so that records repeat one and hit the cached edges.
        "tid": draw(st.integers(1, 2)), "pid": 1,
        "comm": draw(st.sampled_from(["envoy", "wrk:worker_0"])),
        "state": "preempted" if preempted else "blocked",
        "target_stack": draw(st.integers(0, 3)),  # 3 is never defined
        "count": draw(st.integers(0, 5)), "total_us": draw(st.integers(0, 1000)),
        "max_us": draw(st.integers(0, 1000)), "blocked_us": draw(st.integers(0, 1000)),
        "runq_us": draw(st.integers(0, 1000)),
    }
    if preempted:
        rec.update(preempted_by_pid=1, preempted_by_comm="kubelet")
        if draw(st.booleans()):
            rec["preempted_by_tid"] = 1
    else:
        rec.update(waker_tid=1, waker_pid=1, waker_comm="kubelet",
                   waker_stack=draw(st.integers(0, 3)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # damage: change, drop, add
        key = draw(st.sampled_from(sorted(rec) + ["waker_tid", "preempted_by_tid", "extra"]))
        if key == "type":
            continue
        if draw(st.booleans()):
            rec.pop(key, None)
        else:
            rec[key] = draw(_ODD)
    return rec


def fed(builder: RecordingBuilder, *records: List[dict]) -> RecordingBuilder:
    """``builder`` after ``add`` of every record of ``records``, in order."""
    for batch in records:
        for record in batch:
            builder.add(record)
    return builder


def _stacks() -> List[dict]:
    return [{"type": "stack", "id": i, "frames": [f"h10_f{i % 2}", "x"], "kernel_depth": 1}
            for i in range(3)]  # ids 0 and 2 name equal frames: their edges merge


def _summary(builder: RecordingBuilder) -> Any:
    recording = builder.finish()
    edges = [(e.target, e.target_stack, e.waker, e.waker_stack, e.preempted, e.preempted_by,
              e.total_us, e.count, e.max_us, e.blocked_us, e.runq_us) for e in recording.edges]
    return edges, builder.malformed, recording.warnings, len(recording.stacks)


@SETTINGS
@given(st.lists(_wakeup(), max_size=30), st.integers(0, 30))
def test_fast_wakeup_path_matches_the_careful_path(records, redefine_at):
    fast, careful = RecordingBuilder(), CarefulBuilder()
    redefine = {"type": "stack", "id": 1, "frames": ["h10_other"], "kernel_depth": 0}
    for builder in (fast, careful):
        fed(builder, _stacks())
        for index, record in enumerate(records):
            if index == redefine_at:
                builder.add(redefine)  # cached identities must not outlive their stack ids
            builder.add(dict(record))
    assert _summary(fast) == _summary(careful)


def test_a_redefined_stack_id_is_not_served_from_the_cache():
    record = {"type": "wakeup", "seq": 0, "snap": 1, "tid": 1, "pid": 1, "comm": "envoy",
              "state": "blocked", "target_stack": 1, "count": 1, "total_us": 5, "max_us": 5,
              "blocked_us": 5, "runq_us": 0, "waker_tid": 1, "waker_pid": 1,
              "waker_comm": "kubelet", "waker_stack": 0}
    builder = fed(RecordingBuilder(), _stacks())
    builder.add(dict(record))
    builder.add({"type": "stack", "id": 1, "frames": ["h10_other"], "kernel_depth": 0})
    builder.add(dict(record))
    assert [e.target_stack.frames for e in builder.recording.edges] == [
        ("h10_f1", "x"), ("h10_other",)]


class CountingBuilder(RecordingBuilder):
    """Counts the wakeups that left the fast path."""

    careful = 0

    def _wakeup_careful(self, record: Any) -> Any:
        self.careful += 1
        return super()._wakeup_careful(record)


def test_the_fast_path_takes_both_kinds_with_or_without_optional_and_new_fields():
    """The path is chosen by what a record is, not by how many keys it has: a field a later
    collector adds (or the optional ``preempted_by_tid``) must not send every record of a
    recording down the slow path."""
    base = {"type": "wakeup", "seq": 0, "snap": 1, "tid": 1, "pid": 1, "comm": "envoy",
            "target_stack": 1, "count": 1, "total_us": 5, "max_us": 5, "blocked_us": 5,
            "runq_us": 0}
    blocked = dict(base, state="blocked", waker_tid=2, waker_pid=2, waker_comm="kubelet",
                   waker_stack=0)
    preempted = dict(base, state="preempted", preempted_by_pid=3, preempted_by_comm="hog")
    records = [blocked, preempted, dict(preempted, preempted_by_tid=4),
               dict(blocked, h1_new_field=[1]), dict(preempted, h1_new_field={"a": 1})]
    builder = fed(CountingBuilder(), _stacks(), records)
    assert builder.careful == 0 and builder.malformed == 0
    assert len(builder.recording.edges) == 3
    reference = fed(CarefulBuilder(), _stacks(), records)
    assert _summary(builder) == _summary(reference)


_LINE = st.one_of(
    _wakeup().map(json.dumps),
    st.sampled_from(['{"type":"snapshot","seq":5,"snap":1}', '{"type":"end","reason":"x"}',
                     '{"type":"stack","id":1,"frames":[]}', '{"type":"nope","seq":9}',
                     '{"type":"log"}', '[1]', '{"type":1}', '{"a":1} {"b":2}', "", "  ",
                     '{"type":"snapshot","snap":2}\r', ' {"type":"snapshot","snap":3}',
                     "\ufeff{}", "not json", '{"type":"hello","seq":2,"schema":1}']),
    st.text(max_size=6),
)


@SETTINGS
@given(st.lists(st.tuples(_LINE, st.integers(-1, 40)), max_size=40))
def test_decoder_loop_matches_feed_line_by_line(lines_and_seqs):
    lines = ['{"type":"hello","seq":1,"schema":1}']
    for line, seq in lines_and_seqs:
        if line.startswith('{"type":"wakeup"') and seq >= 0:
            line = line.replace('"seq": 0', f'"seq": {seq}')
        lines.append(line)
    by_feed, by_loop = StreamDecoder(), StreamDecoder()
    expected: List[dict] = []
    for line in lines:
        expected.extend(by_feed.feed(line))
    assert list(by_loop.records(lines)) == expected
    assert vars(by_loop) == vars(by_feed)


def test_decoder_loop_raises_what_feed_raises_before_the_hello():
    for first in ("not json", '{"type":"wakeup","seq":1}', '{"type":"hello","schema":9}'):
        try:
            StreamDecoder().feed(first)
        except WireError as exc:
            expected = str(exc)
        try:
            list(StreamDecoder().records([first]))
        except WireError as exc:
            assert str(exc) == expected
        else:
            raise AssertionError(f"no error for {first!r}")
