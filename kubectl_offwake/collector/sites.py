"""Unwind sites: how to find the caller at each place a frameless function can be stopped.

A thread that blocks, or wakes another, is inside a system call: its user instruction pointer
is right after a ``syscall`` instruction, and every frame above it is right after a ``call``.
In code built without frame pointers (Debian's libc, most distribution binaries) the
frame-pointer walk skips those functions' callers, so for such modules we list every
``syscall`` and ``call`` return site with its CFI rule (``cfi.py``) and the BPF program
unwinds frames by it while the addresses keep hitting the table.

The BPF program cannot tell which module an address belongs to (that would mean reading
kernel structures), so a site is keyed by what it can read: the address's offset in its page
and the 16 code bytes around it (8 before, 8 after). The same library mapped by any process
on the node — a target or any waker — gives the same keys. Two sites of the indexed modules
with the same key and different rules are both dropped (the walk then falls back to frame
pointers there); a site of a module not indexed matches a key only if its page offset and
all 16 bytes agree with an indexed one.

Which modules: those whose ``.eh_frame`` shows that most functions set up no ``rbp`` frame.
Modules built with frame pointers (Envoy) need no table: the frame-pointer walk is exact
there, and cheaper.
"""

from __future__ import annotations

import bisect
import mmap
import os
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from .cfi import Fde, Rule, read_fdes
from .elf import Segment, map_file, read_layout, section
from .symbolize import ProcessMaps

#: Code bytes read on each side of an address to key it.
BEFORE = 8
AFTER = 8
PAGE_MASK = 0xFFF
#: FDEs looked at to decide whether a module uses frame pointers.
SAMPLE_FDES = 3000
#: A module in which at least this share of non-leaf functions set up an rbp frame is
#: taken as built with frame pointers (gcc -fno-omit-frame-pointer gives ~100%; code built
#: without them uses rbp frames only in functions with variable-sized stack data, a few %).
FP_SHARE = 0.5

SiteKey = Tuple[int, int, int]  # page offset, 8 bytes before, 8 bytes after (little-endian)

_SYSCALL = re.compile(b"\x0f\x05", re.DOTALL)
_CALL_REL = re.compile(b"\xe8", re.DOTALL)
# ff /2: an indirect call (through a register, the GOT, a vtable slot...); a REX prefix
# before it does not change where it ends.
_CALL_IND = re.compile(b"\xff[\x10-\x17\x50-\x57\x90-\x97\xd0-\xd7]", re.DOTALL)


def _indirect_call_end(code: bytes, at: int) -> int:
    """Where the ``ff /2`` call at ``at`` ends (its ModRM, SIB and displacement)."""
    modrm = code[at + 1]
    mod, rm = modrm >> 6, modrm & 7
    end = at + 2
    if mod != 3 and rm == 4:  # SIB byte
        if mod == 0 and code[at + 2] & 7 == 5:
            end += 4  # no base: disp32
        end += 1
    if mod == 1:
        end += 1
    elif mod == 2 or (mod == 0 and rm == 5):
        end += 4  # disp32, or rip-relative
    return end


@dataclass
class ModuleSites:
    """The sites of one module; ``frame_pointers`` modules have none (not needed)."""

    frame_pointers: bool
    sites: Dict[SiteKey, Optional[Rule]] = field(default_factory=dict)
    functions: int = 0


def _fde_uses_frames(fdes: Iterable[Fde]) -> Tuple[int, int]:
    """(non-leaf functions, those with an rbp frame) among ``fdes``."""
    nonleaf = framed = 0
    for fde in fdes:
        if len(fde.rows) < 2:
            continue  # no stack adjustment at all: a leaf, says nothing
        nonleaf += 1
        framed += fde.uses_rbp_frame
    return nonleaf, framed


def uses_frame_pointers(fdes: List[Fde]) -> bool:
    nonleaf, framed = _fde_uses_frames(fdes)
    return nonleaf > 0 and framed >= FP_SHARE * nonleaf


def _code_segments(loads: List[Segment], size: int) -> List[Segment]:
    return [s for s in loads if s.executable and s.offset + s.filesz <= size]


def scan_sites(data: Union[bytes, mmap.mmap], loads: List[Segment], fdes: List[Fde],
               plt: List[Tuple[int, int]]) -> Dict[SiteKey, Optional[Rule]]:
    """Every syscall and call return site inside a function with CFI, keyed for BPF.

    No disassembly: byte patterns find them (a direct call only if it lands on a function
    start or in the PLT). A pattern inside another instruction adds a key no thread's
    address will have — harmless; a real site is never missed for want of a decoder.
    """
    starts = sorted(f.pc_begin for f in fdes)
    by_start = {f.pc_begin: f for f in fdes}
    targets = set(starts)
    out: Dict[SiteKey, Optional[Rule]] = {}

    plt_lo = min((lo for lo, _hi in plt), default=0)
    plt_hi = max((hi for _lo, hi in plt), default=0)

    for seg in _code_segments(loads, len(data)):
        code = data[seg.offset:seg.offset + seg.filesz]
        sites: List[int] = []
        sites.extend(m.start() + 2 for m in _SYSCALL.finditer(code))
        for m in _CALL_REL.finditer(code):
            at = m.start()
            if at + 5 > len(code):
                continue
            dest = seg.vaddr + at + 5 + struct.unpack_from("<i", code, at + 1)[0]
            if dest in targets or plt_lo <= dest < plt_hi:
                sites.append(at + 5)
        sites.extend(_indirect_call_end(code, m.start())
                     for m in _CALL_IND.finditer(code) if m.start() + 7 <= len(code))
        for at in sites:
            if at < BEFORE or at + AFTER > len(code):
                continue
            addr = seg.vaddr + at
            i = bisect.bisect_right(starts, addr - 1) - 1
            if i < 0:
                continue
            fde = by_start[starts[i]]
            if not fde.pc_begin <= addr - 1 < fde.pc_end:
                continue
            rule = fde.rule_at(addr - 1)
            if rule is None:
                continue
            before, after = struct.unpack_from("<QQ", code, at - BEFORE)
            key = (addr & PAGE_MASK, before, after)
            have = out.get(key, rule)
            out[key] = rule if have == rule else None  # ambiguous: dropped
    return out


def module_sites(path: str) -> Optional[ModuleSites]:
    """The sites of the ELF file at ``path``; None if it cannot be read or has no CFI."""
    data = map_file(path)
    if data is None:
        return None
    try:
        return _module_sites(data)
    except (struct.error, ValueError, IndexError):
        return None
    finally:
        data.close()


def _module_sites(data: mmap.mmap) -> Optional[ModuleSites]:
    sections, loads = read_layout(data)
    eh = section(sections, ".eh_frame")
    if eh is None or not eh.size or eh.offset + eh.size > len(data):
        return None
    raw = data[eh.offset:eh.offset + eh.size]
    fdes: List[Fde] = []
    for fde in read_fdes(raw, eh.addr):
        fdes.append(fde)
        if len(fdes) == SAMPLE_FDES and uses_frame_pointers(fdes):
            return ModuleSites(frame_pointers=True, functions=len(fdes))
    if uses_frame_pointers(fdes):
        return ModuleSites(frame_pointers=True, functions=len(fdes))
    plt = [(s.addr, s.addr + s.size) for s in sections if s.name.startswith(".plt")]
    return ModuleSites(False, scan_sites(data, loads, fdes, plt), len(fdes))


#: Libraries every process's blocking calls go through: indexed for all processes on the
#: node when tracing starts, so that any waker's call into them has its caller.
_SYSTEM_LIB = re.compile(r"^(libc|libc\.musl-[^/]*|ld-linux[^/]*|ld-musl-[^/]*|libpthread|"
                         r"libstdc\+\+|libgcc_s)[.-][^/]*$")


def is_system_library(path: str) -> bool:
    return bool(_SYSTEM_LIB.match(os.path.basename(path)))


def code_mappings(pid: int) -> List[Tuple[int, int, str]]:
    """(start, end, path) of each executable file mapping of a process."""
    return [(m.start, m.end, m.path) for m in ProcessMaps(pid).maps
            if m.executable and m.path.startswith("/") and not m.path.endswith(" (deleted)")]


def _open_path(pid: int, start: int, end: int, path: str) -> Optional[Tuple[str, Tuple[int, int]]]:
    """A path that opens the file behind a mapping (also in another mount namespace), and
    its (device, inode)."""
    for cand in (f"/proc/{pid}/map_files/{start:x}-{end:x}", f"/proc/{pid}/root{path}"):
        try:
            st = os.stat(cand)
        except OSError:
            continue
        return cand, (st.st_dev, st.st_ino)
    return None


def merge_sites(rules: Dict[SiteKey, Optional[Rule]], new: Dict[SiteKey, Optional[Rule]]
                ) -> Tuple[Dict[SiteKey, Rule], List[SiteKey]]:
    """Adds a module's sites to ``rules``; returns the sites to write and the keys to drop
    (a key two modules give different rules is ambiguous: no rule at all is safer)."""
    fresh: Dict[SiteKey, Rule] = {}
    dropped: List[SiteKey] = []
    for key, rule in new.items():
        if key in rules:
            have = rules[key]
            if have is not None and have != rule:
                rules[key] = None
                dropped.append(key)
            continue
        rules[key] = rule
        if rule is not None:
            fresh[key] = rule
    return fresh, dropped


@dataclass
class IndexStats:
    modules: int = 0  # frameless modules indexed
    frame_pointer_modules: int = 0  # looked at, built with frame pointers: no table needed
    sites: int = 0  # sites in the table
    ambiguous: int = 0  # keys dropped because two sites shared them with different rules
    seconds: float = 0.0
    full: bool = False  # the budget was reached: later modules were not indexed
    names: List[str] = field(default_factory=list)


class SiteIndex:
    """The unwind sites of every module indexed so far, merged into one table.

    ``write`` receives new sites for the BPF map, ``drop`` keys found ambiguous later.
    """

    def __init__(self, write: Callable[[Dict[SiteKey, Rule]], int],
                 drop: Callable[[List[SiteKey]], None], budget: int) -> None:
        self._write = write
        self._drop = drop
        self.budget = budget
        self.rules: Dict[SiteKey, Optional[Rule]] = {}
        self._seen: Set[Tuple[int, int]] = set()
        self._pids: Set[int] = set()
        self.stats = IndexStats()

    def add_process(self, pid: int, only: Optional[Callable[[str], bool]] = None) -> None:
        """Indexes the frameless modules a process maps (those ``only`` accepts). Each
        module is read once, whichever process maps it."""
        if only is None:
            if pid in self._pids:
                return
            self._pids.add(pid)
        for start, end, path in code_mappings(pid):
            if only is not None and not only(path):
                continue
            found = _open_path(pid, start, end, path)
            if found is None or found[1] in self._seen:
                continue
            self._seen.add(found[1])
            self._add_module(found[0], path)

    def add_all_processes(self, only: Callable[[str], bool]) -> None:
        for name in os.listdir("/proc"):
            if name.isdigit():
                self.add_process(int(name), only)

    def _add_module(self, open_path: str, path: str) -> None:
        if self.stats.full:
            return
        t0 = time.monotonic()
        try:
            mod = module_sites(open_path)
            if mod is None:
                return
            if mod.frame_pointers:
                self.stats.frame_pointer_modules += 1
                return
            fresh, dropped = merge_sites(self.rules, mod.sites)
            if dropped:
                self._drop(dropped)
                self.stats.sites -= len(dropped)
            self.stats.ambiguous += len(dropped) + sum(1 for r in mod.sites.values()
                                                       if r is None)
            if self.stats.sites + len(fresh) > self.budget:
                for key in fresh:
                    del self.rules[key]
                self.stats.full = True
                return
            self.stats.sites += self._write(fresh)
            self.stats.modules += 1
            self.stats.names.append(os.path.basename(path))
        finally:
            self.stats.seconds += time.monotonic() - t0
