"""The collector's unwind tables: CFI rows, sites, the frame-pointer test, merging, and how
user frames are named and counted. Checked against binutils (readelf, objdump) on binaries
gcc builds here, with and without frame pointers."""

from __future__ import annotations

import bisect
import os
import re
import shutil
import struct
import subprocess
from typing import Dict, List, Optional, Tuple

import pytest

from kubectl_offwake.collector.cfi import CFA_RBP, CFA_RSP, Fde, Rule, read_fdes
from kubectl_offwake.collector.elf import read_layout, read_symbols, section
from kubectl_offwake.collector.sites import (
    is_system_library,
    merge_sites,
    module_sites,
    scan_sites,
    uses_frame_pointers,
)
from kubectl_offwake.collector.snapshot import FrameCounts
from kubectl_offwake.collector.symbolize import (
    MODULE_OFFSET,
    SYMBOL,
    UNKNOWN,
    Symbolizer,
    with_debug_symbols,
)
from kubectl_offwake.wire.schema import TRUNCATED_FRAME

pytestmark = pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("readelf") and shutil.which("objdump")),
    reason="needs gcc and binutils")

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((noinline)) long leaf(long x) { return x * 3 + 1; }
__attribute__((noinline)) long with_alloca(int n) {
    char *p = __builtin_alloca(n); memset(p, 1, n); return p[n / 2] + leaf(n);
}
__attribute__((noinline)) long caller(long (*fn)(long), long x) {
    char buf[64]; snprintf(buf, sizeof buf, "%ld", x); return fn(x) + strlen(buf);
}
__attribute__((noinline)) long raw_read(int fd, char *c) {
    long r; __asm__ volatile("syscall" : "=a"(r) : "a"(0), "D"(fd), "S"(c), "d"(1)
                             : "rcx", "r11", "memory");
    return r + leaf(r);
}
int main(int argc, char **argv) {
    char c = 0;
    return (int)(caller(leaf, argc) + with_alloca(argc * 16) + raw_read(-1, &c));
}
"""


@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> Dict[str, str]:
    tmp = tmp_path_factory.mktemp("unwind")
    src = tmp / "prog.c"
    src.write_text(SOURCE)
    out = {}
    for name, flags in (("fp", ["-O2", "-fno-omit-frame-pointer"]),
                        ("nofp", ["-O2", "-fomit-frame-pointer"])):
        exe = tmp / name
        subprocess.run(["gcc", *flags, "-o", str(exe), str(src)], check=True)
        out[name] = str(exe)
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _maps() -> List[List[str]]:
    with open("/proc/self/maps") as f:
        return [line.split() for line in f]


def _fdes(path: str) -> List[Fde]:
    data = _read(path)
    sections, _loads = read_layout(data)
    eh = section(sections, ".eh_frame")
    assert eh is not None
    return list(read_fdes(data[eh.offset:eh.offset + eh.size], eh.addr))


def _readelf_rows(path: str) -> List[Tuple[int, int, Optional[Tuple[int, int, int]]]]:
    """(function start, row address, expected rule) from readelf's interpreted table."""
    # (readelf exits 1 over libc's odd .interp, after printing the tables)
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", path],
                          capture_output=True, text=True).stdout
    rows = []
    fde = None
    cols: Optional[List[str]] = None
    for line in text.splitlines():
        m = re.search(r"FDE cie=\w+ pc=([0-9a-f]+)\.\.", line)
        if m:
            fde, cols = int(m.group(1), 16), None
            continue
        if "CIE" in line:
            fde, cols = None, None
            continue
        if line.strip().startswith("LOC"):
            cols = line.split()
            continue
        parts = line.split()
        if fde is None or cols is None or len(parts) != len(cols):
            continue
        row = dict(zip(cols, parts))
        cfa = re.fullmatch(r"(rsp|rbp)\+(\d+)", row["CFA"])
        bp = row.get("rbp", "u")
        want = None
        if cfa and row.get("ra") == "c-8" and (bp in ("u", "s") or re.fullmatch(r"c-\d+", bp)):
            want = (CFA_RSP if cfa.group(1) == "rsp" else CFA_RBP, int(cfa.group(2)),
                    0 if bp in ("u", "s") else -int(bp[2:]))
        rows.append((fde, int(parts[0], 16), want))
    return rows


@pytest.mark.parametrize("which", ["fp", "nofp", "libc"])
def test_cfi_rows_agree_with_readelf(binaries, which):
    path = binaries.get(which) or _libc()
    fdes = {f.pc_begin: f for f in _fdes(path)}
    rows = _readelf_rows(path)
    assert len(rows) > 20
    for start, loc, want in rows:
        rule = fdes[start].rule_at(loc)
        got = None if rule is None else (rule.cfa_reg, rule.cfa_off, rule.bp_off)
        assert got == want, (hex(loc), got, want)


def _libc() -> str:
    for parts in _maps():
        path = parts[-1]
        if os.path.basename(path).startswith("libc.so"):
            return path
    pytest.skip("no libc mapped")
    raise AssertionError


def test_frame_pointer_modules_are_told_apart(binaries):
    assert uses_frame_pointers(_fdes(binaries["fp"]))
    assert not uses_frame_pointers(_fdes(binaries["nofp"]))
    assert module_sites(binaries["fp"]).frame_pointers  # type: ignore[union-attr]
    nofp = module_sites(binaries["nofp"])
    assert nofp is not None and not nofp.frame_pointers and nofp.sites
    assert module_sites("/nonexistent") is None


def _objdump_sites(path: str) -> List[int]:
    """The end address of every call and syscall instruction, as objdump decodes them."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                          capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in text.splitlines() if re.match(r"\s+[0-9a-f]+:\s", ln)]
    addrs = [int(ln.split(":")[0], 16) for ln in lines]
    out = []
    for i, ln in enumerate(lines[:-1]):
        insn = ln.split(":", 1)[1].strip()
        if insn.startswith(("call", "syscall")):
            out.append(addrs[i + 1])
    return out


@pytest.mark.parametrize("which", ["nofp", "libc"])
def test_every_call_and_syscall_site_is_found(binaries, which):
    path = binaries.get(which) or _libc()
    data = _read(path)
    sections, loads = read_layout(data)
    fdes = _fdes(path)
    plt = [(s.addr, s.addr + s.size) for s in sections if s.name.startswith(".plt")]
    keys = scan_sites(data, loads, fdes, plt)
    starts = sorted(f.pc_begin for f in fdes)
    by_start = {f.pc_begin: f for f in fdes}
    code = next(s for s in loads if s.executable)
    checked = missing = 0
    for end in _objdump_sites(path):
        i = bisect.bisect_right(starts, end - 1) - 1
        if i < 0 or not by_start[starts[i]].pc_begin <= end - 1 < by_start[starts[i]].pc_end:
            continue  # no CFI for that code (PLT stubs, _start)
        rule = by_start[starts[i]].rule_at(end - 1)
        if rule is None or not code.vaddr + 8 <= end <= code.vaddr + code.filesz - 8:
            continue
        off = end - code.vaddr + code.offset
        key = (end & 0xFFF, *struct.unpack_from("<QQ", data, off - 8))
        checked += 1
        if keys.get(key) != rule:
            missing += 1
    assert checked >= 8
    assert missing <= checked // 1000, (missing, checked)


def test_the_raw_syscall_site_carries_its_rule(binaries):
    """raw_read's syscall (no libc) is a site, with the CFA rule at that instruction."""
    path = binaries["nofp"]
    syms = read_symbols(path)
    i = syms.names.index(b"raw_read")
    lo, hi = syms.starts[i], syms.ends[i]
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                          capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in text.splitlines() if re.match(r"\s+[0-9a-f]+:\s", ln)]
    addrs = [int(ln.split(":")[0], 16) for ln in lines]
    at = next(k for k, ln in enumerate(lines) if lo <= addrs[k] < hi and "syscall" in ln)
    end = addrs[at + 1]
    sites = module_sites(path)
    assert sites is not None
    fde = next(f for f in _fdes(path) if f.pc_begin <= end - 1 < f.pc_end)
    matching = [r for (page, _b, _a), r in sites.sites.items() if page == end & 0xFFF]
    assert fde.rule_at(end - 1) in matching


def test_merging_drops_keys_two_modules_disagree_on():
    a, b = Rule(CFA_RSP, 8, 0), Rule(CFA_RSP, 16, -16)
    rules: Dict = {}
    fresh, dropped = merge_sites(rules, {(1, 2, 3): a, (4, 5, 6): b})
    assert fresh == {(1, 2, 3): a, (4, 5, 6): b} and dropped == []
    fresh, dropped = merge_sites(rules, {(1, 2, 3): a, (4, 5, 6): a, (7, 8, 9): None})
    assert fresh == {} and dropped == [(4, 5, 6)]
    assert rules[(4, 5, 6)] is None and rules[(7, 8, 9)] is None
    fresh, dropped = merge_sites(rules, {(4, 5, 6): b})
    assert fresh == {} and dropped == []  # stays dropped


def test_system_libraries():
    for path in ("/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/ld-musl-x86_64.so.1",
                 "/lib64/ld-linux-x86-64.so.2", "/usr/lib/libstdc++.so.6.0.30",
                 "/lib/x86_64-linux-gnu/libpthread.so.0", "/lib/libc.musl-x86_64.so.1"):
        assert is_system_library(path), path
    for path in ("/usr/bin/envoy", "/usr/lib/libcrypto.so.3", "/opt/libcurl.so.4"):
        assert not is_system_library(path), path


def test_user_frames_are_symbols_or_module_offsets_never_bare_inside_a_mapping():
    sym = Symbolizer(None)
    pid = os.getpid()
    heap = code = None
    for parts in _maps():
        lo = int(parts[0].split("-")[0], 16)
        if parts[-1] == "[heap]" and heap is None:
            heap = lo + 0x10
        if os.path.basename(parts[-1]).startswith("libc.so") and "x" in parts[1]:
            code = lo
    libc = with_debug_symbols(read_symbols(_libc()), "")
    names = {n.decode() for n in libc.names}
    # a libc function (whichever alias the symbol table lists there)
    found = sym.user_frames(pid, [code + 0x10] if code else [])
    if found:
        name, kind = found[0]
        assert kind in (SYMBOL, MODULE_OFFSET)
        assert name in names or name.startswith("libc.so")
    if heap is not None:
        assert sym.user_frames(pid, [heap]) == [("[heap]+0x10", MODULE_OFFSET)]
    assert sym.user_frames(pid, [0x10]) == [("0x10", UNKNOWN)]


def test_frame_counts_and_the_marker():
    counts = FrameCounts()
    counts.add(["try_to_wake_up", "0xffffffff81000000"], [SYMBOL, MODULE_OFFSET, UNKNOWN], 1,
               True)
    counts.add([], [SYMBOL], 0, False)
    assert counts.record() == {
        "user": 4, "user_symbol": 2, "user_module_offset": 1, "user_unknown": 1,
        "user_cfi": 1, "truncated_stacks": 1, "kernel": 2, "kernel_unknown": 1,
    }
    assert TRUNCATED_FRAME.startswith("[truncated:")


def test_symbol_versions_are_dropped():
    from kubectl_offwake.collector.symbolize import short_name

    assert short_name("pthread_mutex_lock@@GLIBC_2.2.5") == "pthread_mutex_lock"
    assert short_name("__libc_start_main@GLIBC_2.2.5") == "__libc_start_main"
    assert short_name("ns::f(int)") == "ns::f"

