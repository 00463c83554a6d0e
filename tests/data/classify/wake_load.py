"""A test load: threads of one process waking each other through each kernel mechanism.

Run it and trace it with the collector to re-record real-6.18-h2load.jsonl.gz (see
README.md). Thread names say who is who: h2-efd-w writes an eventfd h2-efd-r waits on, and
so on. ``H2_SECS`` sets how long it runs (default 8 s). Linux only.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Callable, List

from loadkit import name, until

running = until("H2_SECS")


def every(comm: str, period: float, act: Callable[[], object]) -> Callable[[], None]:
    def loop() -> None:
        name(comm)
        while running():
            act()
            time.sleep(period)
    return loop


def waiting(comm: str, wait: Callable[[], object]) -> Callable[[], None]:
    def loop() -> None:
        name(comm)
        while running():
            try:
                wait()
            except TimeoutError:
                pass
    return loop


def main() -> None:
    efd = os.eventfd(0)
    epoll = select.epoll()
    epoll.register(efd, select.EPOLLIN)

    def efd_wait() -> None:
        if epoll.poll(0.05):
            os.eventfd_read(efd)

    unix_a, unix_b = socket.socketpair()
    unix_b.settimeout(0.2)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    udp_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_in.bind(("127.0.0.1", 0))
    udp_in.settimeout(0.2)
    udp_out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pipe_r, pipe_w = os.pipe()
    event = threading.Event()

    def tcp_server() -> None:
        name("h2-tcp-srv")
        conn, _ = listener.accept()
        conn.settimeout(0.2)
        while running():
            try:
                if not conn.recv(100):
                    break
            except TimeoutError:
                pass

    def tcp_client() -> None:
        name("h2-tcp-cli")
        sock = socket.create_connection(listener.getsockname())
        while running():
            sock.send(b"y")
            time.sleep(0.017)
        sock.close()

    def pipe_wait() -> None:
        if select.select([pipe_r], [], [], 0.2)[0]:
            os.read(pipe_r, 10)

    def futex_wait() -> None:
        event.wait(0.5)
        event.clear()

    threads: List[Callable[[], None]] = [
        waiting("h2-efd-r", efd_wait),
        every("h2-efd-w", 0.010, lambda: os.eventfd_write(efd, 1)),
        waiting("h2-unix-r", lambda: unix_b.recv(100)),
        every("h2-unix-w", 0.013, lambda: unix_a.send(b"x")),
        tcp_server,
        tcp_client,
        waiting("h2-udp-r", lambda: udp_in.recv(100)),
        every("h2-udp-w", 0.019, lambda: udp_out.sendto(b"z", udp_in.getsockname())),
        waiting("h2-futex-w", futex_wait),
        every("h2-futex-s", 0.023, event.set),
        waiting("h2-pipe-r", pipe_wait),
        every("h2-pipe-w", 0.029, lambda: os.write(pipe_w, b"p")),
        every("h2-sleep", 0.031, lambda: None),
        every("h2-spin", 0.001, lambda: sum(range(20000))),
    ]
    started = [threading.Thread(target=t) for t in threads]
    for t in started:
        t.start()
    for t in started:
        t.join()


if __name__ == "__main__":
    main()
