"""Turns stack addresses into frame names, on the node where the binaries are.

Kernel addresses resolve through BCC's kallsyms cache. User addresses resolve through our
own tables: each process's executable mappings (``/proc/PID/maps``) and each module's
function symbols (``elf.py``), the file opened through ``/proc/PID/map_files`` (works for
deleted files and other mount namespaces) or ``/proc/PID/root``. Tables are read once per
process and module and kept, so a process that exits before the next snapshot still
resolves; every resolved address is cached per process.

An address no symbol covers is written ``module+0xOFFSET`` (the ELF virtual address inside
the module, what ``addr2line -e module`` takes), never ``[unknown]``: stripped Envoy builds
can be symbolized offline from that. That holds for every mapping, code or not (a frame in
``[heap]`` or a data segment is the trace of a broken frame-pointer chain, and says where it
went); only an address outside every mapping is written bare, ``0x...``. Each name's kind
(``symbol``, ``module_offset``, ``unknown``) is kept for the collector's frame counts.

C++ names are demangled (libstdc++'s ``__cxa_demangle``) and lose their parameter lists:
they are long, and add nothing a reader of an off-CPU report needs.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..wire.schema import MissingHalf
from .elf import ElfSymbols, debug_file, read_symbols

MAX_NAME = 200


def short_name(name: str) -> str:
    """``ns::Cls::fn(int, std::string const&) const`` -> ``ns::Cls::fn``; a symbol version
    (``pthread_mutex_lock@@GLIBC_2.2.5``) goes too."""
    text = name.strip()
    if "@" in text and "(" not in text:
        text = text.split("@", 1)[0] or text
    for suffix in (" const", " &&", " &", " volatile"):
        while text.endswith(suffix):
            text = text[: -len(suffix)]
    if text.endswith(")"):
        depth = 0
        for i in range(len(text) - 1, -1, -1):
            ch = text[i]
            if ch == ")":
                depth += 1
            elif ch == "(":
                depth -= 1
                if depth == 0:
                    if i > 0:
                        text = text[:i]
                    break
    if len(text) > MAX_NAME:
        text = text[: MAX_NAME - 3] + "..."
    return text


class Demangler:
    """C++ demangling through libstdc++ (present wherever BCC is); names pass through if not."""

    def __init__(self) -> None:
        self._fn: Any = None
        self._free: Any = None
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
            fn = getattr(lib, "__cxa_demangle")  # (a literal would be name-mangled)
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.POINTER(ctypes.c_int)]
            libc = ctypes.CDLL(None)
            libc.free.argtypes = [ctypes.c_void_p]
            self._fn, self._free = fn, libc.free
        except (OSError, AttributeError):
            pass

    def __call__(self, name: bytes) -> str:
        if self._fn is not None and name.startswith(b"_Z"):
            status = ctypes.c_int(0)
            ptr = self._fn(name, None, None, ctypes.byref(status))
            if ptr:
                try:
                    raw = ctypes.string_at(ptr)
                finally:
                    self._free(ptr)
                if status.value == 0:
                    return raw.decode("utf-8", "replace")
        return name.decode("utf-8", "replace")


#: What a user frame resolved to.
SYMBOL = "symbol"
MODULE_OFFSET = "module_offset"
UNKNOWN = "unknown"


@dataclass
class Mapping:
    start: int
    end: int
    pgoff: int
    path: str
    executable: bool = True


class ProcessMaps:
    """The mappings of one process, sorted for bisect."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.maps: List[Mapping] = []
        self.starts: List[int] = []
        self.load()

    def load(self) -> None:
        maps = []
        try:
            with open(f"/proc/{self.pid}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) < 5:
                        continue
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    path = parts[5].strip() if len(parts) > 5 else ""
                    maps.append(Mapping(lo, hi, int(parts[2], 16), path, "x" in parts[1]))
        except OSError:
            return  # gone: keep what we had
        maps.sort(key=lambda m: m.start)
        self.maps = maps
        self.starts = [m.start for m in maps]

    def find(self, addr: int) -> Optional[Mapping]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None


class Symbolizer:
    """Kernel and user symbolization with caches; ``bpf_cls`` is ``bcc.BPF`` (for ksym)."""

    def __init__(self, bpf_cls: Any) -> None:
        self._bpf = bpf_cls
        self._kernel: Dict[int, str] = {}
        self._user: Dict[int, Dict[int, Tuple[str, str]]] = {}
        self._procs: Dict[int, ProcessMaps] = {}
        self._modules: Dict[Tuple[int, int], ElfSymbols] = {}
        self._module_of: Dict[Tuple[int, str], ElfSymbols] = {}
        self._reloaded: set = set()
        self.demangle = Demangler()

    def kernel(self, addrs: Sequence[int]) -> List[str]:
        out = []
        for addr in addrs:
            name = self._kernel.get(addr)
            if name is None:
                raw = self._bpf.ksym(addr)
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                name = text if text and text != "[unknown]" else f"0x{addr:x}"
                self._kernel[addr] = name
            out.append(name)
        return out

    def warm(self, pid: int) -> None:
        """Read a process's mappings and its modules' symbols now, while it is alive, so
        frames of a process that exits before the next snapshot still resolve."""
        maps = self._maps(pid)
        for m in maps.maps:
            if m.executable:
                self._symbols(pid, m)

    def new_snapshot(self) -> None:
        """Allow one re-read of each process's mappings (libraries loaded since)."""
        self._reloaded.clear()

    def user_frames(self, pid: int, addrs: Sequence[int]) -> List[Tuple[str, str]]:
        """(name, kind) per address; kind is SYMBOL, MODULE_OFFSET or UNKNOWN."""
        cache = self._user.setdefault(pid, {})
        out = []
        for addr in addrs:
            found = cache.get(addr)
            if found is None:
                found = cache[addr] = self._resolve(pid, addr)
            out.append(found)
        return out

    def modules_of(self, pid: int, addrs: Sequence[int]) -> List[str]:
        """The file paths of the mappings these addresses fall in (as /proc/PID/maps
        names them), their symbols read now: a waker met while tracing (a shell writing
        once) may exit before the next snapshot, and a dead process's files cannot be
        opened; its later stacks through the same modules then still resolve."""
        maps = self._maps(pid)
        out = []
        for addr in addrs:
            m = maps.find(addr)
            if m is not None and m.path.startswith("/"):
                out.append(m.path)
                self._symbols(pid, m)
        return out

    def _maps(self, pid: int) -> ProcessMaps:
        maps = self._procs.get(pid)
        if maps is None:
            maps = self._procs[pid] = ProcessMaps(pid)
        return maps

    def _symbols(self, pid: int, m: Mapping) -> Optional[ElfSymbols]:
        key = (pid, m.path)
        found = self._module_of.get(key)
        if found is not None or m.path.startswith("[") or not m.path:
            return found
        path = f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}"
        try:
            st = os.stat(path)
        except OSError:
            path = f"/proc/{pid}/root{m.path}"
            try:
                st = os.stat(path)
            except OSError:
                return None
        ident = (st.st_dev, st.st_ino)
        found = self._modules.get(ident)
        if found is None:
            found = self._modules[ident] = with_debug_symbols(read_symbols(path),
                                                              f"/proc/{pid}/root")
        self._module_of[key] = found
        return found

    def _resolve(self, pid: int, addr: int) -> Tuple[str, str]:
        maps = self._maps(pid)
        m = maps.find(addr)
        if m is None and pid not in self._reloaded:
            self._reloaded.add(pid)
            maps.load()
            m = maps.find(addr)
        if m is None:
            return f"0x{addr:x}", UNKNOWN
        base = os.path.basename(m.path) if m.path else "anon"
        if base.endswith(" (deleted)"):
            base = base[: -len(" (deleted)")]
        if not m.path.startswith("/"):  # [heap], [stack], [vdso], anonymous memory
            return f"{base}+0x{addr - m.start:x}", MODULE_OFFSET
        syms = self._symbols(pid, m)
        if syms is None:
            return f"{base}+0x{addr - m.start + m.pgoff:x}", MODULE_OFFSET
        vaddr = syms.vaddr(addr - m.start + m.pgoff)
        name = syms.lookup(vaddr) if m.executable else None
        if name:
            return short_name(self.demangle(name)), SYMBOL
        return f"{base}+0x{vaddr:x}", MODULE_OFFSET


def with_debug_symbols(syms: ElfSymbols, root: str) -> ElfSymbols:
    """A stripped module's symbols from its separate debug file, where the process's root
    has one (e.g. libc6-dbg: start_thread, __futex_abstimed_wait_common instead of
    ``libc.so.6+0x...``); the module's own load segments map addresses either way."""
    if syms.full or not syms.build_id:
        return syms
    path = debug_file(root, syms.build_id)
    if not os.path.isfile(path):
        return syms
    debug = read_symbols(path)
    if not debug.full or debug.build_id != syms.build_id:
        return syms
    return ElfSymbols(starts=debug.starts, ends=debug.ends, names=debug.names,
                      loads=syms.loads, full=True, build_id=syms.build_id)


def describe_missing(kid: int, uid: int, kernel_thread: bool) -> Optional[MissingHalf]:
    """Which half of a stack BPF failed to capture (collision or full map)."""
    lost = (-17, -12)
    k_lost = kid in lost or (kid < 0 and kid != -14)
    u_lost = uid in lost and not kernel_thread
    if k_lost and u_lost:
        return "both"
    if k_lost:
        return "kernel"
    if u_lost:
        return "user"
    return None
