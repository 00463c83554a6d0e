"""Where a report is written: a regular file appears whole or not at all; a device or a
FIFO given as --out is written in place, never replaced (renaming a temporary file over
/dev/null once turned this machine's /dev/null into a regular file)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from kubectl_offwake.render import atomic_output


def test_a_regular_file_appears_only_when_the_block_succeeds(tmp_path) -> None:
    path = tmp_path / "report.txt"
    with pytest.raises(ValueError), atomic_output(str(path)) as out:
        out.write("half")
        raise ValueError("renderer failed")
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    with atomic_output(str(path)) as out:
        out.write("whole")
    assert path.read_text() == "whole"


def test_a_fifo_is_written_in_place(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    with atomic_output(str(fifo)) as out:
        out.write("report\n")
    reader.join(10)
    assert got == ["report\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left


@pytest.mark.root
def test_a_character_device_stays_a_device(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a second /dev/null
    with atomic_output(str(null)) as out:
        out.write("discarded\n")
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]
