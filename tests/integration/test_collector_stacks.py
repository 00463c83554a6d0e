"""Whole user stacks from the real collector (root + eBPF).

Test programs (``progs/``) call ``read``, ``write``, ``pthread_cond_wait`` and
``pthread_cond_signal`` through Debian's libc, which is built without frame pointers, from
named functions in programs built with them; one is also built without frame pointers at
all, as distribution binaries are; and one leaves frame-pointer chains that loop. The
collector must show each named function right above the libc frames (target and waker
stacks alike), unwind the frameless program to its thread's start, stop and mark the loops,
and write no bare address for a frame inside a mapping. One more run checks the build for
kernels without ``bpf_task_pt_regs``, where the kernel walks user stacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Set, Tuple

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs"))
import harness  # noqa: E402

from kubectl_offwake.collector.elf import read_symbols  # noqa: E402
from kubectl_offwake.collector.symbolize import short_name, with_debug_symbols  # noqa: E402
from kubectl_offwake.wire.schema import TRUNCATED_FRAME  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]

harness.skip_module_unless_runnable()

ITERS = 20
PERIOD_MS = 20
FIFO_ITERS = 60
#: Debian's /bin/sh, built without frame pointers like the rest of the distribution.
SHELL = "/bin/dash"

#: program -> (source, cflags)
PROGRAMS: Dict[str, Tuple[str, List[str]]] = {
    "libc_rw": ("libc_rw", harness.CFLAGS),
    "libc_cond": ("libc_cond", harness.CFLAGS),
    "libc_rw_nofp": ("libc_rw", harness.CFLAGS_NO_FP),
    "fp_loop": ("fp_loop", harness.CFLAGS),
}

#: (program, thread) -> (our function right above libc, its caller)
CALLERS: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("libc_rw", "target"): ("read_message", "target_loop"),
    ("libc_rw", "waker"): ("send_message", "waker_loop"),
    ("libc_cond", "target"): ("wait_for_signal", "target_loop"),
    ("libc_cond", "waker"): ("send_signal", "waker_loop"),
    ("libc_rw_nofp", "target"): ("read_message", "target_loop"),
    ("libc_rw_nofp", "waker"): ("send_message", "waker_loop"),
}


def _run(tmp: str, programs: Dict[str, Tuple[str, List[str]]], extra: List[str],
         fifo_writer: bool = False) -> harness.Traced:
    """Runs the programs under one collector; with ``fifo_writer``, also ``fifo_read``, fed
    by a shell (its own process, built without frame pointers, started once the collector's
    loop runs: the loop gives a new waker unwind tables, and a shell that started while the
    collector was still indexing the system libraries could end before the loop began)."""
    progs: Dict[str, harness.Prog] = {}
    writers: List[subprocess.Popen] = []
    fifo = os.path.join(tmp, "fifo")

    def start_writer(collector: harness.Collector) -> None:
        collector.wait_snapshot()
        script = (f"i=0; while [ $i -lt {FIFO_ITERS} ]; do printf x; "
                  f"sleep {PERIOD_MS / 1000}; i=$((i+1)); done > {fifo}")
        writers.append(subprocess.Popen([SHELL, "-c", script]))

    try:
        for name, (source, cflags) in programs.items():
            exe = harness.compile_prog(source, tmp, cflags, name)
            progs[name] = harness.Prog(exe, ITERS, PERIOD_MS)
        if fifo_writer:
            os.mkfifo(fifo)
            exe = harness.compile_prog("fifo_read", tmp)
            progs["fifo_read"] = harness.Prog(exe, FIFO_ITERS, PERIOD_MS, [fifo])
        return harness.trace(progs, extra, start_writer if fifo_writer else lambda c: None)
    finally:
        for writer in writers:
            writer.wait(timeout=30)
        for p in progs.values():
            p.close()


@pytest.fixture(scope="module")
def session():
    tmp = tempfile.mkdtemp(prefix="h5-stacks-")
    try:
        yield _run(tmp, PROGRAMS, [], fifo_writer=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _main_edge(run: harness.Traced, name: str) -> Any:
    prog = run.progs[name]
    edges = [w for w in run.report.wakeups
             if w.target.tid == prog.target_tid and w.waker is not None
             and w.waker.tid == prog.waker_tid]
    assert edges, f"no edge from the waker to the target of {name}"
    return max(edges, key=lambda w: w.edge.count or 0)


def _libc_names(run: harness.Traced, pid: int) -> Set[str]:
    """Names the symbolizer can give libc's frames: its symbols (with its separate debug
    symbols where installed), or ``libc.so.6+0x..``."""
    path = next(p for _lo, _hi, p in run.maps[pid] if os.path.basename(p).startswith("libc."))
    syms = with_debug_symbols(read_symbols(path), "")
    return {short_name(n.decode("utf-8", "replace")) for n in syms.names}


def _is_libc(frame: str, names: Set[str]) -> bool:
    return frame in names or frame.startswith("libc.so.6+0x")


def test_stream_is_complete(session):
    assert session.exit_code == 0, session.stderr[-2000:]
    end = session.records[-1]
    assert end["type"] == "end" and end["reason"] == "signal"
    frames = end["frames"]
    assert frames["user"] > 0 and frames["user_cfi"] > 0, frames
    assert frames["user"] == (frames["user_symbol"] + frames["user_module_offset"]
                              + frames["user_unknown"])
    assert end["totals"]["unwind_modules"] >= 1 and end["totals"]["unwind_sites"] > 1000
    assert end["lost"]["stack_eexist"] == 0 and end["lost"]["stack_enomem"] == 0


@pytest.mark.parametrize("name,thread", sorted(CALLERS))
def test_named_function_right_above_libc(session, name, thread):
    fn, caller = CALLERS[(name, thread)]
    main = _main_edge(session, name)
    stack = main.edge.target_stack if thread == "target" else main.edge.waker_stack
    frames = harness.user_frames_of(stack)
    assert fn in frames, frames
    at = frames.index(fn)
    libc = _libc_names(session, session.progs[name].pid)
    assert at >= 1 and all(_is_libc(f, libc) for f in frames[:at]), frames
    assert frames[at + 1] == caller, frames


@pytest.mark.parametrize("name", ["libc_rw", "libc_cond", "libc_rw_nofp"])
def test_stacks_reach_the_thread_start(session, name):
    """Above the thread function comes libc's thread start (start_thread), for the program
    built without frame pointers too (its frames come from the unwind tables)."""
    main = _main_edge(session, name)
    pid = session.progs[name].pid
    libc = _libc_names(session, pid)
    for stack, entry in ((main.edge.target_stack, "target"), (main.edge.waker_stack, "waker")):
        frames = harness.user_frames_of(stack)
        assert entry in frames, frames
        outer = frames[frames.index(entry) + 1:]
        assert outer and all(_is_libc(f, libc) for f in outer), frames


def test_frame_pointer_loops_are_stopped_and_marked(session):
    main = _main_edge(session, "fp_loop")
    target = harness.user_frames_of(main.edge.target_stack)
    waker = harness.user_frames_of(main.edge.waker_stack)
    # a frame pointer pointing at its own frame: one frame, then the mark
    assert target == ["read_in_loop", "loop_marker", TRUNCATED_FRAME], target
    # a chain that moves up the stack but returns to the same place twice: likewise
    assert waker == ["write_in_chain", "chain_marker", TRUNCATED_FRAME], waker
    assert session.records[-1]["frames"]["truncated_stacks"] >= 2


def test_no_tower_of_one_frame_in_any_stack(session):
    for rec in session.records:
        if rec["type"] != "stack":
            continue
        frames = rec["frames"][rec.get("kernel_depth", 0):]
        for i in range(len(frames) - 2):
            assert not frames[i] == frames[i + 1] == frames[i + 2], rec


def test_no_bare_address_inside_a_mapping(session):
    """Every frame of the test programs' stacks that is a bare address lies outside every
    mapping of its process (there should be none)."""
    pids = {p.pid for p in session.progs.values()}
    for w in session.report.wakeups:
        for task, stack in ((w.target, w.edge.target_stack), (w.waker, w.edge.waker_stack)):
            if task is None or task.pid not in pids or stack is None:
                continue
            for frame in harness.user_frames_of(stack):
                if not frame.startswith("0x"):
                    continue
                addr = int(frame, 16)
                inside = [p for lo, hi, p in session.maps[task.pid] if lo <= addr < hi]
                assert not inside, (frame, inside)


def test_a_frameless_waker_found_while_tracing_is_unwound_whole(session):
    """The shell writing into the FIFO is a process the collector meets only when it wakes
    the target: its program gets unwind tables within a poll, and from then on its stacks
    run from libc's write through the shell's own frames to libc's program start."""
    prog = session.progs["fifo_read"]
    edges = [w for w in session.report.wakeups
             if w.target.tid == prog.target_tid and w.waker is not None
             and w.waker.comm == os.path.basename(SHELL)]
    assert edges, "no wake from the shell"
    assert sum(w.edge.count or 0 for w in edges) >= FIFO_ITERS - 5
    whole = [w for w in edges if "__libc_start_main" in harness.user_frames_of(w.edge.waker_stack)]
    assert whole, [harness.user_frames_of(w.edge.waker_stack) for w in edges]
    # most wakes: the first few may come before the shell's tables are in
    assert sum(w.edge.count or 0 for w in whole) >= FIFO_ITERS // 2
    frames = harness.user_frames_of(max(whole, key=lambda w: w.edge.count or 0).edge.waker_stack)
    libc = _libc_names(session, prog.pid)
    first_own = next(f for f in frames if not _is_libc(f, libc))
    assert first_own.startswith("dash+0x") or not first_own.startswith("0x"), frames
    assert TRUNCATED_FRAME not in frames


def test_kernels_without_task_regs_get_the_kernels_walk():
    """The build for kernels without bpf_task_pt_regs: user stacks by the kernel's walk
    (frame pointers only), no unwind tables."""
    tmp = tempfile.mkdtemp(prefix="h5-stacks-k-")
    try:
        run = _run(tmp, {"libc_rw": PROGRAMS["libc_rw"]}, ["--cflag=-DKERNEL_USTACKS"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert run.exit_code == 0, run.stderr[-2000:]
    end = run.records[-1]
    assert end["frames"]["user_cfi"] == 0 and end["totals"]["unwind_sites"] == 0
    main = _main_edge(run, "libc_rw")
    assert "target_loop" in harness.user_frames_of(main.edge.target_stack)
    assert "waker_loop" in harness.user_frames_of(main.edge.waker_stack)
