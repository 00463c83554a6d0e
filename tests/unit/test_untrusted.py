"""The one neutralizer for text from a node, its JSON form, and the error choke point."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubectl_offwake.errors import BadInput, RunFailed, UserError, say
from kubectl_offwake.untrusted import json_escaped, needs_neutralizing, neutralize
from tests.golden_files import check_golden
from tests.plugin_cli import plugin_env

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                    "\ud800-\udfff\ufffe\uffff]")


@pytest.mark.parametrize("raw,shown", [
    ("\x1b[2J", "\\x1b[2J"),
    ("a\nb\tc\r", "a\\x0ab\\x09c\\x0d"),
    ("\x00\x7f", "\\x00\\x7f"),
    ("\x9b31m", "\\x9b31m"),  # a C1 CSI on its own
    ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
    ("\u2066x\u2069\u200f\u061c", "\\u2066x\\u2069\\u200f\\u061c"),
    ("line\u2028sep", "line\\u2028sep"),
    ("lone\udcffsurrogate", "lone\\udcffsurrogate"),
    ("[red]x <svg onload=1> ;", "[red]x <svg onload=1> ;"),  # markup is the renderers' job
])
def test_unsafe_characters_are_written_out(raw: str, shown: str) -> None:
    assert neutralize(raw) == shown
    assert needs_neutralizing(raw) == (raw != shown)


def test_ordinary_text_is_returned_as_is() -> None:
    text = "envoy wrk:worker_0 µs é 日本 → █ Envoy::Event::DispatcherImpl::post(…)"
    assert neutralize(text) is text
    assert neutralize(42) == "42"


@given(st.text())
def test_neutralized_text_is_safe_and_stable(text: str) -> None:
    shown = neutralize(text)
    assert not UNSAFE.search(shown)
    assert neutralize(shown) == shown
    shown.encode("utf-8")  # no lone surrogate left


@given(st.recursive(st.text() | st.integers() | st.none(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_json_escaping_keeps_values_and_leaves_no_unsafe_character(value: object) -> None:
    for indent in (None, 2):
        text = json_escaped(json.dumps(value, ensure_ascii=False, indent=indent))
        assert not UNSAFE.search(text.replace("\n", ""))
        assert json.loads(text) == value


def test_errors_are_neutralized_where_they_are_made() -> None:
    for error in (UserError("pod x\x1b[2J failed"), BadInput("bad \x9b input"),
                  RunFailed("node n\u202e: collector said \x1b]0;title\x07")):
        assert not UNSAFE.search(str(error)), str(error)
    assert str(RunFailed("pod x\x1b[2J failed")) == "pod x\\x1b[2J failed"
    assert RunFailed("x", exit_code=2).exit_code == 2
    out = io.StringIO()
    say("node-\x1b[2J: done", out)
    assert out.getvalue() == "node-\\x1b[2J: done\n"


def test_golden_update_mode_writes_and_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="wrote h1.txt"):
        check_golden("h1.txt", "new text\n", tmp_path, update=True)
    assert (tmp_path / "h1.txt").read_text() == "new text\n"
    check_golden("h1.txt", "new text\n", tmp_path, update=False)  # then it compares
    with pytest.raises(pytest.fail.Exception, match="differs from the golden file"):
        check_golden("h1.txt", "other text\n", tmp_path, update=False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        check_golden("h2.txt", "x", tmp_path, update=False)


def test_report_command_prints_input_warnings_neutralized(tmp_path: Path) -> None:
    """What an input file says about itself reaches stderr escaped (the real CLI)."""
    capture = tmp_path / "h1-capture.folded"
    capture.write_text("envoy;epoll_wait;--;hrtimer_wakeup;swapper/0 120\n"
                       "WARNING: 3 stack id\x1b[2J\u202e lost\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "kubectl_offwake", "report", str(capture)],
                          capture_output=True, env=plugin_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    stderr = proc.stderr.decode("utf-8")
    assert "warning: offwaketime: 3 stack id\\x1b[2J\\u202e lost" in stderr
    assert not UNSAFE.search(stderr.replace("\n", ""))
