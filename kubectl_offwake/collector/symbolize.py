"""Turns stack addresses into frame names, on the node where the binaries are.

Kernel addresses resolve through BCC's kallsyms cache; user addresses through BCC's
per-process symbol cache (``/proc/PID/maps`` + ELF symtab/dynsym, reached via
``/proc/PID/root``, demangled). Every resolved address is cached per process, so a snapshot
with thousands of new stacks costs one lookup per distinct address.

An address no symbol covers is written ``module+0xOFFSET`` (the ELF virtual address inside
the module), never ``[unknown]``: stripped Envoy builds can be symbolized offline from that.
Demangled C++ names lose their parameter lists: they are long, and add nothing a reader of
an off-CPU report needs.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

MAX_NAME = 200


def short_name(name: str) -> str:
    """``ns::Cls::fn(int, std::string const&) const`` -> ``ns::Cls::fn``."""
    text = name.strip()
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


class Symbolizer:
    """Kernel and user symbolization with caches; ``bpf_cls`` is ``bcc.BPF``."""

    def __init__(self, bpf_cls: Any) -> None:
        self._bpf = bpf_cls
        self._kernel: Dict[int, str] = {}
        self._user: Dict[int, Dict[int, str]] = {}
        self._warm: set = set()

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
        """Load a process's symbol tables now, while it is alive, so frames of a process that
        exits before the next snapshot still resolve."""
        if pid in self._warm:
            return
        self._warm.add(pid)
        for start in _exec_map_starts(pid):
            self._resolve(pid, start)

    def user(self, pid: int, addrs: Sequence[int]) -> List[str]:
        cache = self._user.setdefault(pid, {})
        out = []
        for addr in addrs:
            name = cache.get(addr)
            if name is None:
                name = self._resolve(pid, addr)
                cache[addr] = name
            out.append(name)
        return out

    def _resolve(self, pid: int, addr: int) -> str:
        try:
            name, offset, module = self._bpf._sym_cache(pid).resolve(addr, True)
        except Exception:  # noqa: BLE001 - bcc raises plain errors for gone processes
            name, offset, module = None, addr, None
        if name:
            text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            return short_name(text)
        if module:
            mod = module.decode("utf-8", "replace") if isinstance(module, bytes) else module
            return f"{os.path.basename(mod)}+0x{offset:x}"
        return f"0x{addr:x}"

    def forget(self, pid: int) -> None:
        self._user.pop(pid, None)


def _exec_map_starts(pid: int) -> List[int]:
    starts: List[int] = []
    seen_paths: set = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6 or "x" not in parts[1]:
                    continue
                path = parts[5]
                if path in seen_paths or path.startswith("["):
                    continue
                seen_paths.add(path)
                starts.append(int(parts[0].split("-")[0], 16))
    except OSError:
        pass
    return starts


def split_stack(ips: Sequence[int]) -> List[int]:
    """Addresses of one BPF stack map entry up to its first zero."""
    out = []
    for ip in ips:
        if not ip:
            break
        out.append(int(ip))
    return out


StackKey = Tuple[int, int, int]


def describe_missing(kid: int, uid: int, kernel_thread: bool) -> Optional[str]:
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
