"""Pure parts of the collector: cgroup naming, header lookup, frame names, CLI, the zipapp."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import pytest

from kubectl_offwake.collector import cgroups, headers
from kubectl_offwake.collector.bundle import build_zipapp
from kubectl_offwake.collector.cli import parse_args, parse_duration
from kubectl_offwake.collector.snapshot import lost_summary
from kubectl_offwake.collector.symbolize import describe_missing, short_name
from kubectl_offwake.wire.schema import loss_sentences

CID = "0123456789abcdef" * 4
UID = "8c3a7e52-1b2f-4c1d-9e8f-0a1b2c3d4e5f"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize("text,cid,runtime", [
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope\n", CID, "containerd"),
    (f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope\n", CID, "cri-o"),
    (f"0::/system.slice/docker-{CID}.scope\n", CID, "docker"),
    (f"0::/kubepods/burstable/pod{UID}/{CID}\n", CID, None),
    (f"12:pids:/kubepods/besteffort/pod{UID}/{CID}\n"
     f"1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}\n0::/\n", CID, None),
    (f"4:memory:/docker/{CID}\n", CID, "docker"),
    # a collector pod with its own cgroup namespace sees other pods' paths relative
    (f"0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n", CID,
     "containerd"),
])
def test_cgroup_layouts(text, cid, runtime):
    info = cgroups.parse_cgroup_file(text)
    assert info.container_id == cid
    assert info.runtime == runtime
    if "pod" in text:
        assert info.pod_uid == UID
    assert cgroups.matches_container(info, f"containerd://{cid}")
    assert cgroups.matches_container(info, cid[:12])
    assert not cgroups.matches_container(info, "f" * 64)
    assert not cgroups.matches_container(info, "")


def test_cgroup_without_container():
    info = cgroups.parse_cgroup_file("0::/user.slice/user-0.slice/session-1.scope\n")
    assert info.container_id is None and info.pod_uid is None
    assert info.path == "/user.slice/user-0.slice/session-1.scope"
    # a conmon scope is not the container
    info = cgroups.parse_cgroup_file(f"0::/machine.slice/crio-conmon-{CID}.scope\n")
    assert info.container_id is None


def test_cpu_stat_v1_and_v2(tmp_path):
    v2 = tmp_path / "v2"
    v2.write_text("usage_usec 10\nnr_periods 7\nnr_throttled 3\nthrottled_usec 4500\n")
    assert cgroups.read_cpu_stat(str(v2)) == {
        "usage_usec": 10, "nr_periods": 7, "nr_throttled": 3, "throttled_usec": 4500}
    v1 = tmp_path / "v1"
    v1.write_text("nr_periods 9\nnr_throttled 2\nthrottled_time 7000000\n")
    got = cgroups.read_cpu_stat(str(v1))
    assert got["throttled_usec"] == 7000 and got["nr_throttled"] == 2
    assert cgroups.read_cpu_stat(str(tmp_path / "missing")) == {}


def test_version_code():
    assert headers.version_code("6.18.44-fc-v657") == (6 << 16) + (18 << 8) + 44
    assert headers.version_code("5.4.300") == (5 << 16) + (4 << 8) + 255
    assert headers.version_code("garbage") == 0


def _tree(root, files):
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_debian_split_tree_is_merged(tmp_path, monkeypatch):
    src = tmp_path / "src"
    common = src / "linux-headers-6.1.0-9-common"
    amd64 = src / "linux-headers-6.1.0-9-amd64"
    _tree(common, ["Makefile", "include/linux/sched.h", "arch/x86/include/asm/ptrace.h",
                   "arch/arm64/include/asm/x.h"])
    _tree(amd64, [".config", "include/generated/autoconf.h", "include/config/auto.conf",
                  "arch/x86/include/generated/asm/y.h"])
    (amd64 / "Makefile").write_text(f"include {common}/Makefile\n")
    monkeypatch.setattr(headers, "SRC_ROOT", str(src))
    monkeypatch.setattr(headers, "MODULES_ROOT", str(tmp_path / "modules"))
    monkeypatch.setattr(headers, "KHEADERS", str(tmp_path / "no-kheaders"))
    monkeypatch.setenv("OFFWAKE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(headers.subprocess, "run", lambda *a, **k: None)  # no modprobe
    found = headers.find_headers("6.18.44-x")
    assert found.source == "fallback"
    assert found.env["BCC_LINUX_VERSION_CODE"] == str(headers.version_code("6.18.44-x"))
    tree = found.env["BCC_KERNEL_SOURCE"]
    for rel in ("include/linux/sched.h", "include/generated/autoconf.h", ".config",
                "arch/x86/include/asm/ptrace.h", "arch/x86/include/generated/asm/y.h",
                "arch/arm64/include/asm/x.h"):
        assert os.path.isfile(os.path.join(tree, rel)), rel
    # second lookup reuses the merged tree
    assert headers.find_headers("6.18.44-x").path == found.path


def test_bundled_headers_are_a_fallback_beside_the_hosts(tmp_path, monkeypatch):
    """The image's headers live outside /usr/src (a host mount hides that); the closest
    version not newer than the running kernel wins across both roots."""
    host_src, bundled = tmp_path / "src", tmp_path / "bundled"
    _tree(host_src / "linux-headers-5.10.0-1-amd64", ["include/linux/a.h", "arch/x86/x.h"])
    _tree(bundled / "linux-headers-6.1.0-9-amd64", ["include/linux/a.h", "arch/x86/x.h"])
    _tree(bundled / "linux-headers-6.99.0-1-amd64", ["include/linux/a.h", "arch/x86/x.h"])
    monkeypatch.setattr(headers, "SRC_ROOT", str(host_src))
    monkeypatch.setattr(headers, "BUNDLED_ROOT", str(bundled))
    monkeypatch.setattr(headers, "MODULES_ROOT", str(tmp_path / "modules"))
    monkeypatch.setattr(headers, "KHEADERS", str(tmp_path / "no-kheaders"))
    monkeypatch.setattr(headers.subprocess, "run", lambda *a, **k: None)
    found = headers.find_headers("6.18.44-x")
    assert found.source == "fallback"
    assert found.path == str(bundled / "linux-headers-6.1.0-9-amd64")
    assert "6.1.0-9-amd64" in found.note


def test_host_headers_win(tmp_path, monkeypatch):
    build = tmp_path / "modules" / "6.9.0" / "build"
    _tree(build, ["include/linux/a.h", "arch/x86/include/asm/b.h"])
    monkeypatch.setattr(headers, "MODULES_ROOT", str(tmp_path / "modules"))
    found = headers.find_headers("6.9.0")
    assert found.source == "host" and found.env == {}


def test_no_headers_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(headers, "SRC_ROOT", str(tmp_path / "none"))
    monkeypatch.setattr(headers, "BUNDLED_ROOT", str(tmp_path / "none"))
    monkeypatch.setattr(headers, "MODULES_ROOT", str(tmp_path / "none"))
    monkeypatch.setattr(headers, "KHEADERS", str(tmp_path / "none.tar.xz"))
    monkeypatch.setattr(headers.subprocess, "run", lambda *a, **k: None)
    with pytest.raises(LookupError, match="mount the host's /lib/modules"):
        headers.find_headers("6.9.0")


@pytest.mark.parametrize("raw,short", [
    ("Envoy::Event::DispatcherImpl::post(std::function<void ()>)",
     "Envoy::Event::DispatcherImpl::post"),
    ("Foo::operator()(int) const", "Foo::operator()"),
    ("(anonymous namespace)::worker", "(anonymous namespace)::worker"),
    ("epoll_wait", "epoll_wait"),
    ("x" * 300, "x" * 197 + "..."),
])
def test_short_name(raw, short):
    assert short_name(raw) == short


def test_missing_halves():
    assert describe_missing(5, 7, False) is None
    assert describe_missing(-17, 7, False) == "kernel"
    assert describe_missing(5, -12, False) == "user"
    assert describe_missing(-12, -17, False) == "both"
    assert describe_missing(5, -14, True) is None  # a kernel thread has no user stack


def test_cli():
    assert parse_duration("10") == 10 and parse_duration("2m") == 120
    assert parse_duration("500ms") == 0.5
    opts = parse_args(["--pid", "1", "--pid", "2", "--container-id", "abc", "--interval", "2s",
                       "--min-block-us", "50", "--stack-storage-size", "1024", "--exact-stacks"])
    assert opts.pids == [1, 2] and opts.container_ids == ["abc"] and opts.interval_s == 2
    assert opts.min_block_us == 50 and opts.sizes.stack_storage == 1024
    assert "-DNO_KCACHE" in opts.extra_cflags
    with pytest.raises(SystemExit):
        parse_args([])
    with pytest.raises(SystemExit):
        parse_args(["--pid", "0"])


def test_loss_warnings_name_the_flag():
    counters = {"stack_eexist": 3, "agg_full": 2, "start_full": 0}
    text = " ".join(loss_sentences(lost_summary(counters)))
    assert "--stack-storage-size" in text and "--agg-size" in text
    assert "--start-size" not in text
    assert lost_summary(counters)["map_full"] == 2


def test_zipapp_is_small_complete_and_runs(tmp_path):
    data = build_zipapp()
    assert len(data) < 200 * 1024
    assert data == build_zipapp()  # deterministic
    names = zipfile.ZipFile(io.BytesIO(data[data.index(b"PK"):])).namelist()
    assert "__main__.py" in names
    assert "kubectl_offwake/collector/offwake.bpf.c" in names
    assert "kubectl_offwake/wire/schema.py" in names
    assert not any(n.startswith(("kubectl_offwake/analysis", "kubectl_offwake/cli"))
                   for n in names)
    pyz = tmp_path / "collector.pyz"
    pyz.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, str(pyz), "--help"], capture_output=True, text=True,
                         env=env, cwd=str(tmp_path), timeout=60)
    assert res.returncode == 0 and "--container-id" in res.stdout
    # the BPF source is found from inside the zipapp
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from kubectl_offwake.collector.bpfprog import bpf_source;"
            "print(len(bpf_source()))")
    res = subprocess.run([sys.executable, "-c", code, str(pyz)], capture_output=True, text=True,
                         env=env, cwd=str(tmp_path), timeout=60)
    assert res.returncode == 0 and int(res.stdout) > 1000, res.stderr


def test_elf_reader_finds_functions(tmp_path):
    import shutil as _shutil

    if not (_shutil.which("gcc") and _shutil.which("nm")):
        pytest.skip("needs gcc and nm")
    from kubectl_offwake.collector.elf import read_symbols

    src = tmp_path / "f.c"
    src.write_text("__attribute__((noinline)) int alpha(int x) { return x * 3 + 1; }\n"
                   "__attribute__((noinline)) int beta(int x) { return alpha(x) - 2; }\n"
                   "int main(int c, char **v) { return beta(c); }\n")
    exe = tmp_path / "f"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    syms = read_symbols(str(exe))
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True).stdout
    addr = {line.split()[2]: int(line.split()[0], 16) for line in nm.splitlines()
            if len(line.split()) == 3}
    assert syms.lookup(addr["alpha"]) == b"alpha"
    assert syms.lookup(addr["beta"] + 1) == b"beta"
    assert syms.loads and syms.vaddr(0) == syms.loads[0][1]
    assert read_symbols(str(src)).starts == []  # not ELF: no symbols, no error


def test_interrupt_frames_and_merging():
    from kubectl_offwake.collector.snapshot import in_interrupt, merge_wakeups

    assert in_interrupt(["try_to_wake_up", "hrtimer_wakeup", "__hrtimer_run_queues",
                         "hrtimer_interrupt", "__sysvec_apic_timer_interrupt",
                         "asm_sysvec_apic_timer_interrupt"])
    assert not in_interrupt(["try_to_wake_up", "__wake_up_common", "eventfd_write",
                             "do_syscall_64", "entry_SYSCALL_64_after_hwframe"])
    a = {"snap": 1, "tid": 5, "waker_stack": 3, "count": 2, "total_us": 10, "blocked_us": 8,
         "runq_us": 2, "max_us": 6}
    b = dict(a, count=1, total_us=7, blocked_us=7, runq_us=0, max_us=7)
    c = dict(a, waker_stack=4)
    out = merge_wakeups([a, b, c])
    assert len(out) == 2
    assert out[0]["count"] == 3 and out[0]["total_us"] == 17 and out[0]["max_us"] == 7


class _FakeBPF:
    """Stands in for bcc.BPF: refuses builds that include our own user-stack walk."""

    builds: list = []

    def __init__(self, text: str, cflags: list) -> None:
        _FakeBPF.builds.append(list(cflags))
        if "-DKERNEL_USTACKS" not in cflags:
            raise Exception("unknown func bpf_task_pt_regs#175")


def test_a_kernel_without_the_user_stack_walk_helpers_gets_the_kernels_walk():
    from kubectl_offwake.collector.bpfprog import compile_program

    _FakeBPF.builds = []
    notes: list = []
    compile_program(_FakeBPF, "text", ["-DX=1"], notes)
    assert _FakeBPF.builds[-1] == ["-DX=1", "-DKERNEL_USTACKS"]
    assert len(notes) == 1 and "kernel walks user stacks instead" in notes[0]


def test_builds_that_fail_both_ways_fail_plainly():
    from kubectl_offwake.collector.bpfprog import compile_program

    class Broken:
        def __init__(self, text: str, cflags: list) -> None:
            raise Exception("compile error")

    with pytest.raises(Exception, match="compile error"):
        compile_program(Broken, "text", ["-DKERNEL_USTACKS"], [])
