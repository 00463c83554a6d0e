"""The live progress display: what it derives from wire records and what it prints."""

from __future__ import annotations

import io
import os
import select

from rich.console import Console

from kubectl_offwake.live import LiveProgress, SourceState, StepPrinter
from kubectl_offwake.wire.schema import loss_sentences
from tests.untrusted_checks import assert_terminal_safe


def hello(**extra: object) -> dict:
    return {"type": "hello", "schema": 1, "interval_s": 1.0, "duration_s": 5.0, **extra}


def test_elapsed_counts_from_the_start_of_tracing_not_of_the_collector() -> None:
    state = SourceState("node-a")
    state.feed(hello())
    assert state.status == "attaching" and state.duration_s == 5.0
    # 1.5 s went to compiling: tracing_s counts from the attach.
    state.feed({"type": "progress", "elapsed_s": 2.5, "tracing_s": 1.0, "wakeups": 10,
                "edges": 3})
    assert state.status == "tracing" and state.elapsed_s == 1.0 and state.wakeups == 10
    state.feed({"type": "progress", "elapsed_s": 3.5, "tracing_s": 2.0, "wakeups": 25,
                "edges": 4})
    assert state.elapsed_s == 2.0 and state.wakeups == 25 and state.edges == 4
    state.feed({"type": "end", "reason": "duration", "elapsed_s": 6.6, "tracing_s": 5.1,
                "totals": {"wakeups": 60, "edges": 9}, "lost": {}})
    assert state.status == "done" and state.elapsed_s == 5.0
    assert state.wakeups == 60 and state.edges == 9


def test_tracing_s_when_the_collector_sends_it_wins() -> None:
    state = SourceState("x")
    state.feed(hello())
    state.feed({"type": "progress", "elapsed_s": 9.0, "tracing_s": 4.0})
    assert state.elapsed_s == 4.0


def test_interrupted_run_summary_says_why_it_stopped() -> None:
    state = SourceState("envoy")
    state.feed(hello(duration_s=60.0))
    state.feed({"type": "progress", "elapsed_s": 2.0, "tracing_s": 1.0, "wakeups": 5})
    state.feed({"type": "end", "reason": "signal", "elapsed_s": 4.0, "tracing_s": 3.0,
                "totals": {"wakeups": 42}, "lost": {"stack_eexist": 0}})
    assert state.elapsed_s == 3.0
    line = state.summary()
    assert line.startswith("envoy: 3.0 s, 42 wakeups") and "stopped: signal" in line
    assert "nothing lost" in line


def test_losses_name_the_flag_and_sums_are_not_counted_twice() -> None:
    lost = {"stack_eexist": 7, "stack_enomem": 0, "map_full": 3, "agg_full": 3,
            "start_full": 0, "oncpu_full": 0}
    notes = loss_sentences(lost)
    assert len(notes) == 2
    assert any("7 stacks lost to hash collisions" in n and "--stack-storage-size" in n
               for n in notes)
    assert any("3 wakeups not counted" in n and "--agg-size" in n for n in notes)
    assert loss_sentences({"map_full": 2}) == [
        "2 records lost because a map was full; raise --agg-size"]
    assert loss_sentences({"stack_eexist": 0}) == []


def test_not_a_terminal_prints_only_the_final_lines() -> None:
    out = io.StringIO()
    with LiveProgress("tracing", stream=out) as live:
        assert not live.live_enabled
        live.add_source("node-a", 5.0)
        live.add_source("node-b", 5.0)
        live.feed("node-a", hello())
        live.feed("node-a", {"type": "progress", "elapsed_s": 2.0, "tracing_s": 1.0, "wakeups": 7})
        live.feed("node-b", {"type": "end", "reason": "error", "elapsed_s": 0.1})
        assert out.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("node-a: 1.0 s, 7 wakeups")
    assert lines[1].startswith("node-b:") and "stopped: error" in lines[1]


def test_no_summary_when_the_run_failed() -> None:
    out = io.StringIO()
    try:
        with LiveProgress("tracing", stream=out) as live:
            live.add_source("node-a")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert out.getvalue() == ""


def test_live_table_has_one_row_per_source_and_loss_advice() -> None:
    live = LiveProgress("tracing 2 nodes", stream=io.StringIO(), live=False)
    live.feed("node-a", hello())
    live.feed("node-a", {"type": "progress", "elapsed_s": 3.0, "wakeups": 1234, "edges": 56,
                         "lost": {"stack_enomem": 2}})
    live.set_status("node-b", "pulling image")
    console = Console(file=io.StringIO(), width=140, record=True)
    console.print(live)
    text = console.export_text()
    assert "tracing 2 nodes" in text
    assert "node-a" in text and "1,234" in text and "56" in text
    assert "node-b" in text and "pulling image" in text
    assert "raise --stack-storage-size" in text


def test_step_printer_lines() -> None:
    out = io.StringIO()
    steps = StepPrinter(stream=out)
    with steps.working("setting up"):
        steps.done("network namespace ready")
    assert out.getvalue() == "✓ network namespace ready\n"


def test_late_records_do_not_undo_stopping() -> None:
    state = SourceState("node-a")
    state.status = "stopping"
    state.feed(hello())
    state.feed({"type": "progress", "elapsed_s": 2.0})
    assert state.status == "stopping"
    state.feed({"type": "end", "reason": "signal", "elapsed_s": 3.0})
    assert state.status == "done"


HOSTILE = "\x1b[2J[red]x<svg onload=1>\u202e\x9b"

def _feed_hostile(live: LiveProgress) -> None:
    name = "node" + HOSTILE
    live.feed(name, hello())
    live.feed(name, {"type": "progress", "elapsed_s": 1.0, "wakeups": 5, "edges": 2,
                     "lost": {"stack_enomem" + HOSTILE: 3}})
    live.feed(name, {"type": "log", "level": "warning", "message": "said" + HOSTILE})
    live.feed(name, {"type": "end", "reason": "error" + HOSTILE, "elapsed_s": 2.0})


def test_hostile_names_are_neutralized_and_never_markup() -> None:
    live = LiveProgress("tracing" + HOSTILE, stream=io.StringIO(), live=False)
    _feed_hostile(live)
    # Even a console that interprets markup (rich's default) shows the names as text.
    console = Console(file=io.StringIO(), width=200, force_terminal=True,
                      color_system="standard")
    console.print(live)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert_terminal_safe(text)
    assert "\x1b[2J" not in text and "[red]x<svg onload=1>" in text
    stream = io.StringIO()
    with LiveProgress("t", stream=stream, live=False) as quiet:
        _feed_hostile(quiet)
    assert "node\\x1b[2J[red]x" in stream.getvalue()
    assert_terminal_safe(stream.getvalue())


def test_live_display_on_a_terminal_writes_no_hostile_byte() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(os.dup(slave), "w", encoding="utf-8") as tty:
            live = LiveProgress("tracing" + HOSTILE, stream=tty, refresh_per_second=20)
            assert live.live_enabled  # a real terminal: the redrawing display
            with live:
                _feed_hostile(live)  # stopping draws the table once more, then the summary
        written = _drain(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "node" in written and "said" in written
    assert_terminal_safe(written)


def _drain(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode("utf-8", "replace")
