"""image/Dockerfile stays a working alternative: its RUN instruction, run as ``docker
build`` would (as root in a debian:bookworm-slim-like root filesystem that mmdebstrap makes
here, with /proc, /sys and /dev mounted), leaves a root filesystem whose python3 has BCC and
the bundled headers. There is no Docker engine on this machine, so FROM and COPY are played
by hand; what can drift — the shell steps reading image/packages — is what runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO
from imgbuild import debian, rootfs

from kubectl_offwake.collector.headers import BUNDLED_ROOT

pytestmark = [pytest.mark.root, pytest.mark.slow]

DOCKERFILE = REPO / "image" / "Dockerfile"


def _run_instruction() -> str:
    text = DOCKERFILE.read_text()
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", text, re.S | re.M)
    assert len(runs) == 1, "the test plays exactly one RUN instruction"
    return runs[0].replace("\\\n", "\n")


def _copied_files() -> list:
    (copy,) = re.findall(r"^COPY (?!--from)(.*) (/\S+)/$", DOCKERFILE.read_text(), re.M)
    names, dest = copy
    return [(REPO / "image" / n, dest) for n in names.split()]


@pytest.fixture
def slim_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (mmdebstrap, chroot)")
    root = str(tmp_path / "root")
    sources = debian.configured_sources() or debian.default_sources()
    mm = subprocess.run(
        ["mmdebstrap", "--mode=root", "--variant=minbase", "--quiet",
         f"--hook-dir={rootfs.MERGED_USR_HOOK}", debian.SUITE, root,
         "\n".join(s.line() for s in sources)],
        capture_output=True, text=True, timeout=1200, check=False)
    assert mm.returncode == 0, mm.stderr[-3000:]
    yield root
    rootfs.remove_tree(root)


def test_the_dockerfile_steps_make_a_working_image_root(slim_root):
    for path, dest in _copied_files():
        os.makedirs(slim_root + dest, exist_ok=True)
        shutil.copy(path, slim_root + dest)
    shutil.copy("/etc/resolv.conf", os.path.join(slim_root, "etc", "resolv.conf"))
    mounts = ('root=$1; shift; mount -t proc proc "$root/proc"; '
              'mount -t sysfs sysfs "$root/sys"; mount --rbind /dev "$root/dev"; '
              'exec chroot "$root" "$@"')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C.UTF-8"}
    build = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", mounts, "sh",
         slim_root, "/bin/sh", "-c", _run_instruction()],
        capture_output=True, text=True, env=env, timeout=1800, check=False)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert "slim: dropped: apt " in build.stderr

    check = subprocess.run(
        ["chroot", slim_root, "/usr/bin/python3", "-c", "import bcc; print(bcc.__file__)"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert check.returncode == 0, check.stderr
    trees = sorted(os.listdir(slim_root + BUNDLED_ROOT))
    assert len(trees) == 2 and trees[1].endswith("-common")
    for gone in ("usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/perl", "tmp/offwake-image"):
        assert not os.path.lexists(os.path.join(slim_root, gone)), gone
