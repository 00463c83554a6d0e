"""Hostile thread names, traced for real: nothing a node says reaches a terminal raw.

Any process on a node names its own threads. A small C program names its threads with an
escape sequence that would clear the screen, rich markup, HTML, and a bidi override with a
C1 CSI, and wakes its own threads through pipes (so those names are targets *and* wakers).
``kubectl offwake local`` (the real CLI, the real collector, the real kernel) traces it
with its output on a pseudo-terminal, as an on-call engineer would see it: the live
display, the coloured table and the closing lines. The saved recording then goes through
``report`` in every format, captured, and a failing command quotes a hostile name in its
error. No raw control byte may appear on any terminal output, no markup may come alive in
the HTML or SVG, JSON keeps the names exact, and a folded file re-imports to itself.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from tests.plugin_cli import plugin_cmd, plugin_env
from tests.untrusted_checks import (
    FOLDED_LINE,
    assert_html_inert,
    assert_svg_inert,
    assert_terminal_safe,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="tracing needs root"),
]

#: Thread names (at most 15 bytes, the kernel's limit); the main thread's is the process's.
ESCAPE = "\x1b[2Jclr"
MARKUP = "[red]x"
HTML = "<svg onload=1>"
BIDI = "rlo\u202e\x9bx"

HOSTILE_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static int one[2], two[2];

static void __attribute__((noinline)) nap(long ms) {
    struct timespec ts = {0, ms * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* Writes a byte every 10 ms: wakes "[red]x" through a pipe. */
static void *ticker(void *arg) {
    prctl(PR_SET_NAME, "\x1b[2Jclr");
    for (;;) { nap(10); if (write(one[1], "x", 1) < 0) return arg; }
}

/* Woken by the ticker, passes it on: wakes the bidi thread. */
static void *relay(void *arg) {
    char c;
    prctl(PR_SET_NAME, "[red]x");
    while (read(one[0], &c, 1) == 1) if (write(two[1], &c, 1) < 0) break;
    return arg;
}

static void *sink(void *arg) {
    char c;
    prctl(PR_SET_NAME, "rlo\xe2\x80\xae\xc2\x9bx");
    while (read(two[0], &c, 1) == 1) {}
    return arg;
}

int main(void) {
    pthread_t t;
    if (pipe(one) || pipe(two)) return 1;
    prctl(PR_SET_NAME, "<svg onload=1>");
    pthread_create(&t, NULL, ticker, NULL);
    pthread_create(&t, NULL, relay, NULL);
    pthread_create(&t, NULL, sink, NULL);
    for (;;) nap(20);
}
"""


@pytest.fixture(scope="module")
def hostile_binary(build_c: Callable[[str, str], Path]) -> Path:
    return build_c(HOSTILE_C, "vocab-hostile")


@pytest.fixture(scope="module")
def hostile(hostile_binary: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([str(hostile_binary)])
    try:
        _wait_for_names(proc.pid)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _wait_for_names(pid: int) -> None:
    """Until the four threads have renamed themselves (they do so first thing)."""
    wanted = {ESCAPE, MARKUP, HTML, BIDI}
    for _ in range(200):
        names = set()
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
                names.add(f.read().rstrip("\n"))
        if names >= wanted:
            return
        time.sleep(0.05)
    pytest.fail(f"the threads never took their names: {names!r}")


@pytest.fixture(scope="module")
def traced(hostile: subprocess.Popen, tmp_path_factory: pytest.TempPathFactory
           ) -> Tuple[Path, str, int]:
    """``local --pid`` on a pseudo-terminal: (saved recording, everything it wrote, exit)."""
    workdir = tmp_path_factory.mktemp("vocab-traced")
    saved = workdir / "vocab-hostile.jsonl.gz"
    env = dict(plugin_env(), TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            plugin_cmd("local", "--pid", str(hostile.pid), "--duration", "3s",
                       "--save", str(saved)),
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=workdir,
            start_new_session=True)
        os.close(slave)
        slave = -1
        written = _read_until_exit(master, proc, timeout_s=180)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return saved, written, proc.returncode


def _read_until_exit(master: int, proc: subprocess.Popen, timeout_s: float) -> str:
    """Everything written to the terminal, read as it comes (a full pty would block)."""
    chunks: List[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                data = b""
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
        proc.wait()
        pytest.fail("kubectl offwake local did not finish")
    proc.wait()
    return b"".join(chunks).decode("utf-8", "replace")


def test_the_terminal_run_shows_the_names_escaped(traced: Tuple[Path, str, int]) -> None:
    saved, written, returncode = traced
    assert returncode == 0, written
    assert saved.exists()
    assert_terminal_safe(written)
    assert "\x1b[2J" not in written
    assert "\\x1b[2Jclr" in written  # the names are there, escaped
    assert "[red]x" in written and HTML in written and "rlo\\u202e\\x9bx" in written
    assert "Heaviest wake paths" in written  # the report itself, not only the live lines


def _report(saved: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(plugin_cmd("report", str(saved), *args), capture_output=True,
                          env=plugin_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _written(source: Path, fmt: str, out: Path) -> str:
    """``report SOURCE -o FMT --out OUT``, and what it wrote."""
    _report(source, "-o", fmt, "--out", str(out))
    return out.read_text(encoding="utf-8")


def test_the_captured_table_and_json(traced: Tuple[Path, str, int]) -> None:
    saved = traced[0]
    table = _report(saved)
    for stream in (table.stdout, table.stderr):
        text = stream.decode("utf-8")
        assert_terminal_safe(text)
        assert "\x1b" not in text  # not a terminal: no colour either
    assert b"\\x1b[2Jclr" in table.stdout and b"[red]x" in table.stdout
    data = _report(saved, "-o", "json").stdout.decode("utf-8")
    assert_terminal_safe(data.replace("\n", ""))
    report = json.loads(data)
    comms = {w["target"]["comm"] for w in report["wakeups"]}
    assert {ESCAPE, MARKUP, BIDI} <= comms  # exact, once decoded
    wakers = {w["waker"]["comm"] for w in report["wakeups"] if w["waker"]}
    assert {ESCAPE, MARKUP} <= wakers


def test_html_and_svg_have_no_live_markup(traced: Tuple[Path, str, int],
                                          tmp_path: Path) -> None:
    html = _written(traced[0], "html", tmp_path / "vocab.html")
    assert_html_inert(html)
    assert "&lt;svg onload=1&gt;" in html and "\\x1b[2Jclr" in html
    titles = assert_svg_inert(_written(traced[0], "svg", tmp_path / "vocab.svg"))
    assert HTML in titles and "\\x1b[2Jclr" in titles and "rlo\\u202e\\x9bx" in titles


def test_folded_output_re_imports_to_itself(traced: Tuple[Path, str, int],
                                           tmp_path: Path) -> None:
    first = tmp_path / "vocab-1.folded"
    text = _written(traced[0], "folded", first)
    assert _written(first, "folded", tmp_path / "vocab-2.folded") == text
    assert_terminal_safe(text)
    lines = text.splitlines()
    assert lines and all(FOLDED_LINE.fullmatch(line) for line in lines)
    comms = {line.split(";", 1)[0] for line in lines}
    assert {"\\x1b[2Jclr", "[red]x", "rlo\\u202e\\x9bx", HTML} <= comms, comms


def test_an_error_quoting_a_hostile_name_is_escaped(traced: Tuple[Path, str, int],
                                                     tmp_path: Path) -> None:
    # A recording named after what it traced (the default save path takes the comm).
    damaged = tmp_path / f"offwake-{ESCAPE}{MARKUP}.jsonl"
    damaged.write_text("not a recording\n")
    proc = subprocess.run(plugin_cmd("report", str(damaged)), capture_output=True,
                          env=plugin_env(), timeout=60)
    assert proc.returncode == 2
    stderr = proc.stderr.decode("utf-8")
    assert stderr.startswith("error:") and "\\x1b[2Jclr[red]x" in stderr
    assert_terminal_safe(stderr)
    assert "\x1b" not in stderr
