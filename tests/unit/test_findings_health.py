"""Report-wide findings (findings/health.py): threads still off the CPU at the end, a
dominant waker, lost data."""

from __future__ import annotations

import json

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import Pending, Task
from tests.unit.findings_support import T_EPOLL_IDLE, at_edge, ids, one
from tests.unit.test_aggregate import (
    APP,
    CRUNCHER,
    KUBELET,
    SWAPPER,
    T_FUTEX,
    T_PREEMPT,
    W_TCP,
    W_TCP_IRQ,
    W_TIMER,
    Mesh,
    waker,
)

# -- still off the CPU at the end -------------------------------------------------------------

def test_still_off_cpu_on_a_lock() -> None:
    m = Mesh()
    m.pending("wrk:worker_1", 12_300_000, T_FUTEX)
    f = one(m.report(), "still-off-cpu")
    assert "wrk:worker_1" in f.text and "futex_wait_queue" in f.text and "12.3 s" in f.text


def test_still_off_cpu_runnable() -> None:
    m = Mesh()
    m.pending("wrk:worker_0", 150_000, T_PREEMPT, preempted=True)
    assert "runnable, waiting for a CPU" in one(m.report(), "still-off-cpu").text


def test_still_off_cpu_near_misses() -> None:
    m = Mesh()
    m.pending("wrk:worker_0", 20_000_000, T_EPOLL_IDLE)  # idle in its event loop
    m.pending("AccessLogFlush", 5_000_000, T_FUTEX)  # idles on a condition variable
    m.rec.processes[100].threads[107] = "GrpcGoogClient"
    m.rec.pending.append(Pending(Task("GrpcGoogClient", 100, 107), 5_000_000,
                                 m.stack(T_FUTEX)))  # an Envoy helper thread, idle
    m.pending("wrk:worker_1", 300_000, T_FUTEX)  # not long
    m.pending("wrk:worker_2", 50_000, T_PREEMPT, preempted=True)
    assert "still-off-cpu" not in ids(m.report())


# -- one waker behind most wakeups -----------------------------------------------------------

def test_dominant_waker() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 600, 6_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 300, 1_000_000)
    m.wake("envoy", waker(SWAPPER), W_TIMER, 100, 3_000_000)
    f = one(m.report(), "dominant-waker")
    assert f.evidence["waker"] == "app/productpage-v1/productpage (gunicorn)"
    assert f.evidence["share"] == 0.6 and "60% of all wakeups (600 of 1000)" in f.text


def test_dominant_waker_near_miss_and_bystanders_do_not_count() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 400, 6_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 300, 1_000_000)
    m.wake("wrk:worker_1", waker(CRUNCHER), W_TCP_IRQ, 300, 1_000_000)  # a bystander
    assert "dominant-waker" not in ids(m.report())
    m = Mesh()
    m.wake("wrk:worker_0", waker(CRUNCHER), W_TCP_IRQ, 900, 6_000_000)  # all bystander
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 100, 1_000_000)
    assert "dominant-waker" not in ids(m.report())


# -- losses -------------------------------------------------------------------------------------

def test_losses_name_the_flag() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1000, 1_000_000)
    m.rec.lost.update({"stack_eexist": 37, "stack_enomem": 0, "map_full": 20, "agg_full": 20,
                       "start_full": 0, "oncpu_full": 0})
    f = one(m.report(), "losses")
    assert f.evidence["flags"] == ["--agg-size", "--stack-storage-size"]
    assert f.evidence["lost"] == {"stack_eexist": 37, "agg_full": 20}
    assert f.severity == "warning"  # 57 of 1000
    # no client record: the collector was run by hand, and it has every option
    assert f.text.endswith(
        "Run the collector again with a larger --agg-size and --stack-storage-size.")


# The loss advice names options of the command that made the recording (its ``client``
# record, written by the pipeline) at twice the size the collector said it used (``hello``).

def _lossy_stream(*client: dict) -> str:
    sizes = {"--stack-storage-size": 16384, "--agg-size": 8192, "--start-size": 16384,
             "--oncpu-size": 4096}
    records = [
        {"type": "hello", "schema": 1, "node": "n1", "interval_s": 1, "map_sizes": sizes},
        *client,
        {"type": "target", "processes": [{"pid": 40, "comm": "envoy"}], "by": "pid"},
        {"type": "stack", "id": 1, "frames": ["schedule", "ep_poll"], "kernel_depth": 2},
        {"type": "wakeup", "snap": 1, "tid": 40, "pid": 40, "comm": "envoy",
         "state": "preempted", "preempted_by_pid": 9, "preempted_by_comm": "hog",
         "target_stack": 1, "count": 100, "total_us": 900, "max_us": 300,
         "blocked_us": 0, "runq_us": 900},
        {"type": "snapshot", "snap": 1, "elapsed_s": 1.0},
        {"type": "end", "reason": "duration", "elapsed_s": 1.0, "totals": {"wakeups": 100},
         "lost": {"agg_full": 7, "stack_enomem": 3, "map_full": 7}, "warnings": []},
    ]
    return "".join(json.dumps({"seq": i + 1, **r}) + "\n" for i, r in enumerate(records))


def _command_options(name: str) -> set:
    """The options the CLI command ``name`` really has."""
    import typer.main

    from kubectl_offwake.cli import app

    group = typer.main.get_command(app)
    command = group.commands[name]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts}


@pytest.mark.parametrize("command,word", [("kubectl offwake local", "local"),
                                          ("kubectl offwake demo", "demo"),
                                          ("kubectl offwake TARGET", "trace")])
def test_losses_advise_the_command_that_made_the_recording(command: str, word: str) -> None:
    from kubectl_offwake.cli.options import client_record
    from kubectl_offwake.importers import parse_wire

    f = one(analyze(parse_wire(_lossy_stream(client_record(command)))), "losses")
    rerun = f"Trace again with {command} --agg-size 16384 --stack-storage-size 32768 " \
            "(twice the size this run used)."
    assert f.text.endswith(rerun) and f.evidence["rerun"] == rerun
    assert set(f.evidence["flags"]) <= _command_options(word)  # advice that can be followed


def test_losses_name_only_options_the_command_has() -> None:
    from kubectl_offwake.importers import parse_wire

    client = {"type": "client", "command": "some-wrapper", "options": ["--agg-size"]}
    f = one(analyze(parse_wire(_lossy_stream(client))), "losses")
    assert f.text.endswith("Trace again with some-wrapper --agg-size 16384 (twice the size "
                           "this run used).")
    bare = {"type": "client", "command": "some-wrapper", "options": []}
    f = one(analyze(parse_wire(_lossy_stream(bare))), "losses")
    assert f.text.endswith("show an empty stack.") and f.evidence["rerun"] is None


def test_losses_of_a_bcc_capture_advise_offwaketime() -> None:
    from pathlib import Path

    from kubectl_offwake.importers import load_input

    data = Path(__file__).parents[1] / "data" / "offwaketime"
    for name in ("text_missed_stacks.txt", "folded_missed_stacks.txt"):
        recording = load_input(str(data / name))
        assert recording.lost == {"stack_lost": 3}  # offwaketime's own WARNING line
        f = one(analyze(recording), "losses")
        assert f.text.endswith("Capture again with a larger offwaketime --stack-storage-size.")


def test_losses_near_miss_all_zero() -> None:
    m = Mesh()
    m.rec.lost.update({"stack_eexist": 0, "stack_enomem": 0, "map_full": 0})
    assert "losses" not in ids(m.report())


# -- how a stuck thread waited, small losses, no counts -----------------------------------------

T_IO = ("__schedule", "schedule", "io_schedule", "folio_wait_bit_common", "filemap_fault",
        "__do_fault", "handle_mm_fault", "exc_page_fault", "asm_exc_page_fault")


def test_still_off_cpu_names_where_it_blocked_and_counts_the_others() -> None:
    m = Mesh()
    m.pending("wrk:worker_0", 2_000_000, T_IO)
    m.pending("wrk:worker_1", 600_000, T_FUTEX)
    m.pending("envoy", 900_000, ("__schedule", "schedule"))
    f = one(m.report(), "still-off-cpu")
    assert "blocked in folio_wait_bit_common for 2.00 s (and 2 more threads)" in f.text
    states = [t["state"] for t in f.evidence["threads"]]
    assert states == ["blocked in folio_wait_bit_common", "blocked in the kernel",
                      "blocked on a futex (a lock or condition variable, in "
                      "futex_wait_queue)"]


def test_losses_under_one_percent_of_wakeups_are_info() -> None:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1000, 1_000_000)
    m.rec.lost.update({"stack_eexist": 9})
    assert one(m.report(), "losses").severity == "info"


def test_dominant_waker_needs_counts() -> None:
    m = Mesh(counts=False)
    m.wake("wrk:worker_0", waker(APP), W_TCP, 600, 6_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 300, 1_000_000)
    assert "dominant-waker" not in ids(m.report())


# -- each threshold at its edge: the finding at the value, silence just under it --------------

def blocked(waiting_us: int) -> Mesh:
    m = Mesh()
    m.pending("wrk:worker_1", waiting_us, T_FUTEX)
    return m


def runnable(waiting_us: int) -> Mesh:
    m = Mesh()
    m.pending("wrk:worker_0", waiting_us, T_PREEMPT, preempted=True)
    return m


def dominant(app: int) -> Mesh:  # the app's wakes, one fewer from the kubelet
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, app, 1_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, app - 1, 1_000_000)
    return m


def dominant_share(app: int) -> Mesh:  # the app's share of 1000 wakeups
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, app, 1_000_000)
    m.wake("wrk:worker_1", waker(KUBELET), W_TCP, 900 - app, 1_000_000)
    m.wake("envoy", waker(SWAPPER), W_TIMER, 100, 3_000_000)  # counted, nobody's doing
    return m


def lost(n: int) -> Mesh:
    m = Mesh()
    m.wake("wrk:worker_0", waker(APP), W_TCP, 1000, 1_000_000)
    m.rec.lost["stack_eexist"] = n
    return m


@pytest.mark.parametrize("make,fid,at,under", [
    (blocked, "still-off-cpu", 500_000, 499_999),  # PENDING_MIN_US
    (runnable, "still-off-cpu", 100_000, 99_999),  # PENDING_RUNQ_MIN_US
    (dominant, "dominant-waker", 50, 49),  # DOMINANT_MIN_WAKES
    (dominant_share, "dominant-waker", 500, 499),  # DOMINANT_SHARE: half of all wakeups
], ids=["blocked", "runnable", "dominant-wakes", "dominant-share"])
def test_thresholds_at_their_edge(make, fid, at, under) -> None:
    at_edge(make, fid, at, under)


def test_losses_a_warning_from_one_percent() -> None:  # LOSS_WARN_SHARE
    assert one(lost(10).report(), "losses").severity == "warning"
    assert one(lost(9).report(), "losses").severity == "info"
