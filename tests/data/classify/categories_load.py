"""A test load for the wakeup categories the other recordings lack, and its recording.

One process whose threads are woken each way: a new connection (``cat-accept``), a
``connect()`` that completes late (``cat-connect``: the listener's accept queue is full,
so the SYN is retransmitted a second later), send-buffer space (``cat-send``), a signal
(``cat-sigwait``), a child's exit (``cat-waitpid``), a block read (``cat-dio``: O_DIRECT,
so the disk answers), an in-kernel lock (``cat-append-*``: two threads appending to one
file on one CPU, so the second sleeps on the inode's lock) and a file lock (``cat-flock``,
which no rule names: ``other``). Linux only; ``CAT_SECS`` sets how long it runs.

    python3 categories_load.py --record real-6.18-categories.jsonl.gz   # as root, with BCC

records it: the workload, traced by the collector (``/usr/bin/python3 -m
kubectl_offwake.collector --pid PID --duration 3 --interval 1``), then scrubbed as the
other recordings here are (README.md): wakeups by the process itself, its children and
the idle task, plus interrupt wakes (their bystander renamed ``swapper/N`` when it was
another process); process records of those; no cgroup paths, container ids, node name,
header paths or log records; unreferenced stacks dropped.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, List, Set

from loadkit import name, until

running = until("CAT_SECS")


def thread(comm: str, body: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        name(comm)
        body()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def accept_and_connect() -> None:
    """cat-accept waits in accept() for cat-client's connections; cat-connect's connect()
    to a listener with a full accept queue completes only when the SYN is retransmitted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        listener.settimeout(0.5)
        while running():
            try:
                listener.accept()[0].close()
            except TimeoutError:
                pass

    def client() -> None:
        while running():
            socket.create_connection(listener.getsockname()).close()
            time.sleep(0.02)

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)

    def late_connect() -> None:
        while running():
            first = socket.create_connection(full.getsockname())  # fills the queue
            thread("cat-unqueue", lambda: (time.sleep(0.3), full.accept()[0].close()))
            socket.create_connection(full.getsockname(), timeout=5).close()  # ~1 s
            first.close()
            full.accept()[0].close()

    thread("cat-accept", serve)
    thread("cat-client", client)
    thread("cat-connect", late_connect)


def send_buffer() -> None:
    """cat-send blocks on a full send buffer until cat-recv reads and ACKs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sender = socket.socket()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sender.connect(listener.getsockname())
    receiver = listener.accept()[0]
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)

    def send() -> None:
        chunk = b"x" * (1 << 20)
        try:
            while running():
                sender.sendall(chunk)
        except OSError:  # the receiver stopped first
            pass

    def receive() -> None:
        while running():
            receiver.recv(65536)
            time.sleep(0.005)

    thread("cat-send", send)
    thread("cat-recv", receive)


def signals() -> None:
    """cat-sigwait waits in sigwait(); cat-kill sends it SIGUSR1 every 30 ms."""
    ready = threading.Event()
    ident: List[int] = []

    def wait() -> None:
        ident.append(threading.get_ident())
        ready.set()
        while running():
            signal.sigwait({signal.SIGUSR1})

    def kill() -> None:
        ready.wait()
        while running():
            signal.pthread_kill(ident[0], signal.SIGUSR1)
            time.sleep(0.03)

    thread("cat-sigwait", wait)
    thread("cat-kill", kill)


def children() -> None:
    """cat-waitpid waits for a short-lived child to exit."""
    def run() -> None:
        while running():
            subprocess.Popen(["sleep", "0.02"]).wait()

    thread("cat-waitpid", run)


def block_reads(directory: str) -> None:
    """cat-dio reads 4 KiB with O_DIRECT: each read sleeps until the disk answers."""
    path = os.path.join(directory, "dio")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 22))
        f.flush()
        os.fsync(f.fileno())

    def read() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        offset = 0
        while running():
            os.preadv(fd, [buf], offset)
            offset = (offset + 4096 * 97) % (1 << 22)
            time.sleep(0.01)

    thread("cat-dio", read)


def kernel_lock(directory: str) -> None:
    """cat-append-a and cat-append-b append to one file from one CPU: while one holds the
    inode's lock the other cannot spin on it (the holder is not running) and sleeps."""
    path = os.path.join(directory, "appended")
    cpu = min(os.sched_getaffinity(0))

    def append() -> None:
        os.sched_setaffinity(0, {cpu})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        chunk = b"y" * (1 << 20)
        while running():
            os.write(fd, chunk)
            if os.fstat(fd).st_size > 64 << 20:
                os.ftruncate(fd, 0)

    thread("cat-append-a", append)
    thread("cat-append-b", append)


def file_lock(directory: str) -> None:
    """cat-flock waits for a flock() that cat-flock-hold keeps 5 ms at a time."""
    path = os.path.join(directory, "flock")
    open(path, "w").close()

    def hold() -> None:
        fd = os.open(path, os.O_RDWR)
        while running():
            fcntl.flock(fd, fcntl.LOCK_EX)
            time.sleep(0.005)
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(0.001)

    def wait() -> None:
        fd = os.open(path, os.O_RDWR)
        while running():
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(0.002)

    thread("cat-flock-hold", hold)
    thread("cat-flock", wait)


def workload() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # every thread: sigwait takes it
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        accept_and_connect()
        send_buffer()
        signals()
        children()
        block_reads(directory)
        kernel_lock(directory)
        file_lock(directory)
        while running():
            time.sleep(0.1)
    os._exit(0)


# -- recording ------------------------------------------------------------------------------

_IRQ = ("asm_common_interrupt", "common_interrupt", "irq_exit", "__irq_exit_rcu",
        "sysvec_", "asm_sysvec_", "handle_irq_event")


def scrub(records: List[dict], pid: int) -> List[dict]:
    """What README.md says the recordings here keep."""
    stacks = {r["id"]: r for r in records if r["type"] == "stack"}
    children: Set[int] = {r["pid"] for r in records if r["type"] == "process"
                          and r["pid"] != pid and r.get("comm") == "sleep"}
    mine = {pid, 0} | children
    out: List[dict] = []
    used_stacks: Set[int] = set()
    used_pids: Set[int] = {pid}
    for r in records:
        kind = r["type"]
        if kind in ("log", "process", "stack"):
            continue
        if kind == "wakeup":
            if r["state"] == "preempted":
                if r.get("preempted_by_pid") not in mine:
                    r.update(preempted_by_pid=0, preempted_by_tid=0, preempted_by_comm="")
            else:
                frames = stacks.get(r.get("waker_stack"), {}).get("frames", [])
                irq = any(f.startswith(_IRQ) for f in frames)
                softirqd = str(r.get("waker_comm", "")).startswith("ksoftirqd/")
                if r.get("waker_pid") not in mine and not softirqd:
                    if not irq:
                        continue
                    r.update(waker_pid=0, waker_tid=0, waker_comm="swapper/0")
                used_pids.add(r.get("waker_pid", 0))
                used_stacks.add(r.get("waker_stack"))
            used_stacks.add(r["target_stack"])
        if kind == "queued" and r.get("holder_pid") not in mine:
            r.update(holder_pid=0, holder_tid=0, holder_comm="")
        if kind == "hello":
            r.update(node="recording-host", headers={"source": "fallback", "path": "-"})
        if kind == "target":
            for p in r["processes"]:
                for key in ("cgroup", "container_id", "pod_uid", "runtime"):
                    p.pop(key, None)
        out.append(r)
    keep = [{k: v for k, v in r.items() if k not in ("cgroup", "container_id", "pod_uid")}
            for r in records if r["type"] == "process" and r["pid"] in used_pids]
    keep += [r for r in records if r["type"] == "stack" and r["id"] in used_stacks]
    head = [r for r in out if r["type"] in ("hello", "target")]
    rest = [r for r in out if r["type"] not in ("hello", "target")]
    return head + keep + rest


def record(out: str) -> None:
    load = subprocess.Popen([sys.executable, __file__], env={**os.environ, "CAT_SECS": "7"})
    try:
        time.sleep(2)  # every thread started and in its rhythm
        collector = subprocess.run(
            ["/usr/bin/python3", "-m", "kubectl_offwake.collector", "--pid", str(load.pid),
             "--duration", "3", "--interval", "1"], capture_output=True, text=True,
            check=True)
    finally:
        load.wait()
    records = [json.loads(line) for line in collector.stdout.splitlines() if line.strip()]
    kept = scrub(records, load.pid)
    for i, r in enumerate(kept, 1):
        r["seq"] = i
    with gzip.open(out, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", metavar="OUT.jsonl.gz")
    args = parser.parse_args()
    if args.record:
        record(args.record)
    else:
        workload()
