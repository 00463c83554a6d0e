"""The collector image that image/build makes, checked by running things in its own root
filesystem: what the collector needs works there, and what it does not need is gone."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from imagefs import image_python, read_archive, run_in_image

from kubectl_offwake.collector.bundle import build_zipapp
from kubectl_offwake.collector.headers import BUNDLED_ROOT

pytestmark = [pytest.mark.root, pytest.mark.slow]

#: The collector's own code, loaded the way the node pod runs it (a zipapp).
ZIPAPP = "/tmp/collector.pyz"
WITH_COLLECTOR = f"import sys; sys.path.insert(0, {ZIPAPP!r})\n"
NO_KHEADERS = not os.path.exists("/sys/kernel/kheaders.tar.xz")


def _collector_files() -> dict:
    return {"collector.pyz": build_zipapp()}


def _json_out(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    # libbcc's own warnings (printf) may follow on stdout
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def test_build_reports_digest_size_and_largest_paths(built):
    manifest, config, blobs = read_archive(built.archive)
    assert built.digest in blobs, "the printed digest is not the archive's manifest"
    assert re.search(r"^size: [\d.]+ MiB compressed .*, [\d.]+ MiB uncompressed$",
                     built.stdout, re.M)
    largest = re.findall(r"^ +[\d.]+ MiB  (/\S+)$", built.stdout, re.M)
    assert len(largest) == 10
    assert any("libLLVM" in p for p in largest), "LLVM (for BCC) is the bulk of the image"
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"]["Entrypoint"] == ["python3"]
    assert any(e.startswith("PATH=/") for e in config["config"]["Env"])
    labels = config["config"]["Labels"]
    for key in ("version", "revision", "created"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert config["created"] == labels["org.opencontainers.image.created"]
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 1
    assert re.search(r"^  kernel headers: linux-headers-\S+-amd64=", built.stdout, re.M)


def test_python_is_debian_python_with_bcc(image_root):
    out = _json_out(image_python(image_root, (
        "import json, sys, bcc\n"
        "print(json.dumps({'exe': sys.executable, 'bcc': bcc.__file__}))")))
    assert out["exe"] == "/usr/bin/python3"
    assert out["bcc"].startswith("/usr/lib/python3/dist-packages/bcc/")


@pytest.mark.skipif(not NO_KHEADERS, reason="this kernel has kheaders built in: the "
                    "collector takes those first (the bundled ones are checked below)")
def test_collector_finds_the_bundled_headers(image_root):
    """No host /lib/modules or /usr/src mounted: the fallback is what the image bundles."""
    out = _json_out(image_python(image_root, WITH_COLLECTOR + (
        "import json\n"
        "from kubectl_offwake.collector.headers import find_headers\n"
        "h = find_headers()\n"
        "print(json.dumps({'source': h.source, 'path': h.path, 'env': h.env, 'note': h.note}))"
    ), files=_collector_files()))
    assert out["source"] == "fallback"
    assert out["env"]["BCC_KERNEL_SOURCE"] == out["path"]
    assert out["env"]["BCC_LINUX_VERSION_CODE"]
    bundled = sorted(os.listdir(image_root + BUNDLED_ROOT))
    version = re.sub(r"^linux-headers-|-amd64$", "", [n for n in bundled
                                                        if n.endswith("-amd64")][0])
    assert version in out["note"] and platform.release() in out["note"]


def test_bundled_headers_are_one_split_tree_for_x86(image_root):
    trees = sorted(os.listdir(image_root + BUNDLED_ROOT))
    assert len(trees) == 2 and trees[0].endswith("-amd64") and trees[1].endswith("-common")
    amd64, common = (Path(image_root + BUNDLED_ROOT) / t for t in trees)
    assert (amd64 / "include" / "generated" / "autoconf.h").is_file()
    assert (common / "include" / "linux" / "sched.h").is_file()
    assert sorted(os.listdir(common / "arch")) == ["x86"]
    assert not (amd64 / "Module.symvers").exists()


def test_bcc_compiles_and_loads_a_sched_switch_program(image_root):
    """BCC from the image, the headers the collector picks there, a tracepoint that fires."""
    out = _json_out(image_python(image_root, WITH_COLLECTOR + r'''
import ctypes, json, os, time
from kubectl_offwake.collector.headers import find_headers
h = find_headers()
os.environ.update(h.env)
from bcc import BPF
b = BPF(text="""
BPF_ARRAY(switches, u64, 1);
TRACEPOINT_PROBE(sched, sched_switch) {
    int zero = 0;
    u64 *n = switches.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
""")
n = 0
for _ in range(500):
    time.sleep(0.01)
    n = b["switches"][ctypes.c_int(0)].value
    if n:
        break
print(json.dumps({"headers": h.describe(), "switches": n}))
''', files=_collector_files()))
    assert out["switches"] > 0, "the program loaded but sched_switch never counted"
    if NO_KHEADERS:
        assert out["headers"]["source"] == "fallback"


def test_the_collector_traces_a_process_from_the_image(image_root):
    """The real collector zipapp, as the node pod runs it, against a process on the host."""
    sleeper = subprocess.Popen([sys.executable, "-c",
                                "import time\nwhile True: time.sleep(0.002)"])
    try:
        proc = run_in_image(image_root, [
            "python3", ZIPAPP, "--pid", str(sleeper.pid), "--duration", "2",
            "--interval", "1", "--node-name", "image-test"], files=_collector_files(),
            env={"PYTHONUNBUFFERED": "1"})
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    kinds = [r.get("type") or r.get("kind") for r in records]
    errors = [r for r in records if r.get("level") == "error"]
    assert proc.returncode == 0 and not errors, f"{errors}\n{proc.stderr[-3000:]}"
    hello = records[kinds.index("hello")]
    end = records[kinds.index("end")]
    assert hello["python"].startswith("3.11") and hello["bcc_version"]
    if NO_KHEADERS:
        assert hello["headers"]["source"] == "fallback"
    assert end["reason"] == "duration"
    assert end["totals"]["wakeups"] > 0 and end["totals"]["snapshots"] >= 1


# --- what is not there ------------------------------------------------------------------

def _files(root: str):
    for top, _dirs, files in os.walk(root):
        for name in files:
            yield os.path.join(top, name)


def test_no_package_tooling_perl_compilers_docs_or_locales(image_root):
    for d in ("usr/bin", "usr/sbin"):
        names = set(os.listdir(os.path.join(image_root, d)))
        found = names & {"apt", "apt-get", "dpkg", "dpkg-deb", "dpkg-query", "perl",
                         "debconf", "gcc", "cc", "c++", "clang", "ld", "as", "make"}
        assert not found, f"/{d} still has {sorted(found)}"
    assert os.listdir(f"{image_root}/var/lib/dpkg") == ["status"]
    with open(f"{image_root}/var/lib/dpkg/status") as f:
        packages = set(re.findall(r"^Package: (\S+)$", f.read(), re.M))
    assert {"python3", "python3-bpfcc", "libbpfcc"} <= packages
    assert not packages & {"dpkg", "perl-base", "debconf", "apt"}
    for gone in ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
                 "usr/lib/x86_64-linux-gnu/gconv", "etc/apt", "var/lib/apt",
                 "usr/lib/python3.11/pydoc_data", "etc/hostname", "etc/resolv.conf"):
        assert not os.path.lexists(os.path.join(image_root, gone)), gone
    docs = [p for p in _files(f"{image_root}/usr/share/doc")
            if os.path.basename(p) != "copyright"]
    assert not docs, docs[:5]
    assert not os.listdir(f"{image_root}/var/log") or all(
        os.path.isdir(os.path.join(image_root, "var/log", n))
        for n in os.listdir(f"{image_root}/var/log"))


def test_bytecode_is_hash_checked_and_only_for_what_is_imported(image_root):
    pycs = [p for p in _files(image_root) if p.endswith(".pyc")]
    assert any("/dist-packages/bcc/__pycache__/" in p for p in pycs)
    for pyc in pycs:
        with open(pyc, "rb") as f:
            flags = int.from_bytes(f.read(8)[4:8], "little")
        assert flags == 0b11, f"{pyc} is timestamp-based (flags {flags})"
    unused = ("/asyncio/", "/unittest/", "/xml/", "/sqlite3/", "/multiprocessing/")
    assert not [p for p in pycs if any(u in p for u in unused)], \
        "modules the collector never imports got bytecode"
    assert all("/usr/lib/python3" in p for p in pycs), "bytecode outside Python's paths"


def test_every_program_and_library_finds_what_it_needs(image_root):
    """Each ELF file's libraries resolve in the image (ld.so --list), each program's
    interpreter exists, and no symbolic link dangles (but for /run's, which a runtime
    provides): what was removed was not needed."""
    elves, scripts = [], {}
    for path in _files(image_root):
        if os.path.islink(path):
            continue
        with open(path, "rb") as f:
            head = f.read(256)
        rel = "/" + os.path.relpath(path, image_root)
        if head.startswith(b"\x7fELF") and (os.access(path, os.X_OK) or ".so" in rel):
            elves.append(rel)
        elif head.startswith(b"#!") and os.access(path, os.X_OK) and "bin/" in rel:
            scripts[rel] = head[2:].split(b"\n")[0].split()[0].decode()
    check = r"""
        for f in $ELVES; do
            out=$(/lib64/ld-linux-x86-64.so.2 --list "$f" 2>&1) || continue
            case "$out" in *"not found"*) echo "$f: $out";; esac
        done
        for pair in $SCRIPTS; do
            [ -e "${pair#*=}" ] || echo "${pair%%=*}: no interpreter ${pair#*=}"
        done
        find / -xdev -xtype l ! -lname '/run/*' -printf '%p -> %l: dangling\n'
    """
    proc = run_in_image(image_root, ["/bin/sh", "-c", check], env={
        "ELVES": " ".join(sorted(elves)),
        "SCRIPTS": " ".join(f"{k}={v}" for k, v in sorted(scripts.items()))})
    assert proc.returncode == 0, proc.stderr
    assert len(elves) > 100 and "/usr/bin/python3.11" in elves
    assert not proc.stdout.strip(), proc.stdout[:3000]


def test_repo_package_list_is_what_the_image_was_built_from(built):
    text = (REPO / "image" / "packages").read_text()
    wanted = re.findall(r"^install +(\S+)", text, re.M)
    listed = dict(re.findall(r"(\S+)=(\S+)", built.stdout.split("kernel headers:")[0]))
    assert set(wanted) <= set(listed)
