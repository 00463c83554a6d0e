"""The importers at benchmark size: 100k folded lines and 100k wire wakeup records.

Merging and interning must stay O(1) per line or record. No time limit (this machine's
speed is no fact about the code): a tenth of the input is imported beside the whole, and
ten times the input must cost far less than the hundred times a quadratic step gives.
Measured as this process's CPU time, which a busy shared machine disturbs far less than
wall time; ``bench/compare-import`` compares the speed itself against another revision.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from kubectl_offwake.importers import load_bytes

pytestmark = pytest.mark.slow

#: Ten times the input, linear: about 10x the CPU time; quadratic: about 100x. Noise on
#: the small run's tenth of a second stays well inside the margin.
SCALING_MAX = 30.0
RNG = random.Random(11)
KERNEL = [f"h1_kernel_function_{i}" for i in range(400)]
USER = [f"Envoy::Http::Filter{i}::decodeData(Buffer::Instance&, bool)" for i in range(400)]
TARGETS = ["envoy", "wrk:worker_0", "wrk:worker_1", "wrk:worker_2", "wrk:worker_3"]
WAKERS = ["kubelet", "swapper/0", "pilot-agent", "envoy", "coredns", "ksoftirqd/1"]


def _halves(n: int):
    out = []
    for _ in range(n):
        size = RNG.randint(8, 24)  # Envoy's stacks: ~8-24 kernel frames, half as many user
        kernel = [RNG.choice(KERNEL) for _ in range(size)]
        user = [RNG.choice(USER) for _ in range(size // 2)]
        out.append((kernel, user))
    return out


def _cpu(fn):
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def _scales_linearly(data: bytes, tenth: bytes, name: str) -> float:
    """The whole input's import CPU time over a tenth's (the smallest of three, the
    tenth's being the noisier)."""
    small = min(_cpu(lambda: load_bytes(tenth, name))[0] for _ in range(3))
    whole = _cpu(lambda: load_bytes(data, name))[0]
    ratio = whole / max(small, 1e-3)
    print(f"{name}: {whole:.2f} s CPU, {ratio:.1f}x a tenth of it")
    return ratio


def test_100k_folded_lines():
    stacks = _halves(3000)
    # Precompute each stack's two printed forms; lines are then cheap to assemble.
    target_forms = [";".join(u[::-1] + ["-"] + k[::-1]) for k, u in stacks]
    waker_forms = [";".join(k + ["-"] + u) for k, u in stacks]
    lines = [
        f"{RNG.choice(TARGETS)};{RNG.choice(target_forms)};--;{RNG.choice(waker_forms)};"
        f"{RNG.choice(WAKERS)} {RNG.randint(1, 10**6)}"
        for _ in range(100_000)
    ]
    data = ("\n".join(lines) + "\n").encode()
    recording = load_bytes(data, "h1-bench.folded")
    assert recording.warnings == []
    assert len(recording.edges) > 95_000
    tenth = ("\n".join(lines[:10_000]) + "\n").encode()
    assert _scales_linearly(data, tenth, "h1-bench.folded") < SCALING_MAX


def test_100k_wire_wakeup_records():
    stacks = _halves(3000)
    lines = [json.dumps({"type": "hello", "seq": 1, "schema": 1})]
    seq = 1
    for sid, (kernel, user) in enumerate(stacks):
        seq += 1
        lines.append(json.dumps({"type": "stack", "seq": seq, "id": sid,
                                 "frames": kernel + user, "kernel_depth": len(kernel)}))
    edges = [(RNG.randint(100, 140), RNG.choice(TARGETS), RNG.randrange(3000),
              RNG.randint(1, 3000), RNG.choice(WAKERS), RNG.randrange(3000))
             for _ in range(10_000)]
    for snap in range(1, 11):
        for tid, comm, ts, wtid, wcomm, ws in edges:
            seq += 1
            lines.append(
                f'{{"type":"wakeup","seq":{seq},"snap":{snap},"tid":{tid},"pid":100,'
                f'"comm":"{comm}","state":"blocked","target_stack":{ts},"waker_tid":{wtid},'
                f'"waker_pid":{wtid},"waker_comm":"{wcomm}","waker_stack":{ws},"count":3,'
                f'"total_us":{RNG.randint(1, 10**5)},"max_us":100,"blocked_us":50,'
                f'"runq_us":50}}'
            )
        seq += 1
        lines.append(json.dumps({"type": "snapshot", "seq": seq, "snap": snap}))
    end = json.dumps({"type": "end", "seq": seq + 1, "reason": "duration"})
    data = ("\n".join([*lines, end]) + "\n").encode()
    recording = load_bytes(data, "h1-bench.jsonl")
    assert recording.warnings == []
    assert len(recording.edges) == len(set(edges))
    assert sum(e.count or 0 for e in recording.edges) == 3 * 100_000
    # a tenth: the stacks and the first of the ten snapshots
    first = next(i for i, line in enumerate(lines) if '"snapshot"' in line)
    tenth = ("\n".join([*lines[:first + 1], end]) + "\n").encode()
    assert _scales_linearly(data, tenth, "h1-bench.jsonl") < SCALING_MAX
