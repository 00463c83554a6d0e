"""DWARF call-frame information (``.eh_frame``): where a function keeps its caller's frame.

Code built without frame pointers (Debian's libc, most distribution binaries) can be
unwound only from its CFI. The BPF program needs two facts per code address, nothing more:
where the canonical frame address (CFA) is — ``rsp`` or ``rbp`` plus an offset — and where
the caller's ``rbp`` was saved (or that ``rbp`` still holds it). The return address is at
CFA-8 on x86-64. Rows that need a DWARF expression (PLT stubs, signal trampolines), keep
``rbp`` in another register, or mark the outermost frame come out as ``None``: the program
does not unwind such a frame by CFI.

Only x86-64 ``.eh_frame`` is read (the BPF side is x86-64 only too).
"""

from __future__ import annotations

import bisect
import functools
import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

#: DWARF register numbers of x86-64.
RBP, RSP, RA = 6, 7, 16

# CFA register as the BPF program numbers it.
CFA_RSP = 0
CFA_RBP = 1


@dataclass(frozen=True)
class Rule:
    """How to find the caller's frame at one code address."""

    cfa_reg: int  # CFA_RSP or CFA_RBP
    cfa_off: int  # CFA = register + cfa_off
    bp_off: int  # the caller's rbp is saved at CFA + bp_off; 0: rbp still holds it


#: A row as the interpreter leaves it: (CFA register, CFA offset, CFA is an expression,
#: rbp rule, return-address rule); turned into a Rule only when asked for (most rows of a
#: module never are).
_Row = Tuple[int, int, bool, Tuple[str, int], Tuple[str, int]]


@dataclass
class Fde:
    """The rows of one function: ``starts[i]`` is where ``rows[i]`` begins to apply."""

    pc_begin: int
    pc_end: int
    starts: List[int]
    rows: List[_Row]

    def rule_at(self, addr: int) -> Optional[Rule]:
        i = bisect.bisect_right(self.starts, addr) - 1
        return _rule(self.rows[i]) if i >= 0 else None

    @property
    def uses_rbp_frame(self) -> bool:
        """Whether the function sets up an rbp frame (CFA from rbp somewhere in it)."""
        return any(row[0] == RBP and not row[2] for row in self.rows)


@functools.lru_cache(maxsize=4096)
def _rule(row: _Row) -> Optional[Rule]:
    cfa_reg, cfa_off, cfa_expr, bp, ra = row
    if cfa_expr or cfa_reg not in (RSP, RBP) or ra != ("offset", -8):
        return None
    if bp[0] == "same":
        bp_off = 0
    elif bp[0] == "offset" and bp[1] != 0:
        bp_off = bp[1]
    else:
        return None
    return Rule(CFA_RSP if cfa_reg == RSP else CFA_RBP, cfa_off, bp_off)


class CfiError(ValueError):
    """The section is not CFI this reader understands."""


def _leb(data: bytes, pos: int, signed: bool) -> Tuple[int, int]:
    """A LEB128 number at ``pos``; returns it and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if signed and byte & 0x40:
                value -= 1 << shift
            return value, pos


def _uleb(data: bytes, pos: int) -> Tuple[int, int]:
    return _leb(data, pos, False)


def _sleb(data: bytes, pos: int) -> Tuple[int, int]:
    return _leb(data, pos, True)


_FIXED = {0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}


def _pointer(data: bytes, pos: int, enc: int, section_addr: int) -> Tuple[int, int]:
    """A DW_EH_PE-encoded pointer at ``pos`` (absolute or pc-relative; others refused)."""
    if enc == 0xFF:
        return 0, pos
    form = enc & 0x0F
    start = pos
    if form == 0x00:
        value = struct.unpack_from("<Q", data, pos)[0]
        pos += 8
    elif form == 0x01:
        value, pos = _uleb(data, pos)
    elif form == 0x09:
        value, pos = _sleb(data, pos)
    elif form in _FIXED:
        fmt = _FIXED[form]
        value = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
    else:
        raise CfiError(f"pointer encoding {enc:#x}")
    app = enc & 0x70
    if app == 0x10:
        value += section_addr + start
    elif app != 0x00:
        raise CfiError(f"pointer application {enc:#x}")
    return value & 0xFFFFFFFFFFFFFFFF, pos


@dataclass
class _Cie:
    code_align: int
    data_align: int
    ra_reg: int
    fde_enc: int
    has_aug_data: bool
    initial: bytes


@dataclass
class _State:
    cfa_reg: int = RSP
    cfa_off: int = 8
    cfa_expr: bool = False
    bp: Tuple[str, int] = ("same", 0)
    ra: Tuple[str, int] = ("offset", -8)

    def copy(self) -> _State:
        return _State(self.cfa_reg, self.cfa_off, self.cfa_expr, self.bp, self.ra)

    def row(self) -> _Row:
        return (self.cfa_reg, self.cfa_off, self.cfa_expr, self.bp, self.ra)


def _set_reg(state: _State, reg: int, how: Tuple[str, int]) -> None:
    if reg == RBP:
        state.bp = how
    elif reg == RA:
        state.ra = how


def _run(program: bytes, cie: _Cie, state: _State, initial: Optional[_State], loc: int,
         starts: List[int], rows: List[_Row]) -> int:
    """Executes CFA instructions, appending a row before every location advance."""
    stack: List[_State] = []
    pos = 0
    n = len(program)

    def move_to(new_loc: int) -> None:
        """Closes the row that applied up to here; the next one applies from ``new_loc``."""
        nonlocal loc
        starts.append(loc)
        rows.append(state.row())
        loc = new_loc

    def advance(delta: int) -> None:
        move_to(loc + delta * cie.code_align)

    def restore(reg: int) -> None:
        base = initial if initial is not None else _State()
        _set_reg(state, reg, base.bp if reg == RBP else base.ra if reg == RA else ("same", 0))

    while pos < n:
        op = program[pos]
        pos += 1
        high, low = op & 0xC0, op & 0x3F
        if high == 0x40:  # advance_loc
            advance(low)
        elif high == 0x80:  # offset
            off, pos = _uleb(program, pos)
            _set_reg(state, low, ("offset", off * cie.data_align))
        elif high == 0xC0:  # restore
            restore(low)
        elif op == 0x00:  # nop
            pass
        elif op == 0x01:  # set_loc (absolute pointers only here)
            new, pos = _pointer(program, pos, cie.fde_enc & 0x0F, 0)
            move_to(new)
        elif op in (0x02, 0x03, 0x04):  # advance_loc1/2/4
            size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            advance(int.from_bytes(program[pos:pos + size], "little"))
            pos += size
        elif op in (0x05, 0x11, 0x14, 0x15, 0x2F):  # offset_extended(_sf), val_offset(_sf)
            reg, pos = _uleb(program, pos)
            if op in (0x11, 0x15):
                off, pos = _sleb(program, pos)
            else:
                off, pos = _uleb(program, pos)
            if op == 0x2F:  # GNU_negative_offset_extended
                off = -off
            kind = "offset" if op in (0x05, 0x11, 0x2F) else "val"
            _set_reg(state, reg, (kind, off * cie.data_align))
        elif op == 0x06:  # restore_extended
            reg, pos = _uleb(program, pos)
            restore(reg)
        elif op == 0x07:  # undefined
            reg, pos = _uleb(program, pos)
            _set_reg(state, reg, ("undefined", 0))
        elif op == 0x08:  # same_value
            reg, pos = _uleb(program, pos)
            _set_reg(state, reg, ("same", 0))
        elif op == 0x09:  # register
            reg, pos = _uleb(program, pos)
            _other, pos = _uleb(program, pos)
            _set_reg(state, reg, ("register", 0))
        elif op == 0x0A:  # remember_state
            stack.append(state.copy())
        elif op == 0x0B:  # restore_state
            if stack:
                saved = stack.pop()
                state.cfa_reg, state.cfa_off, state.cfa_expr = (
                    saved.cfa_reg, saved.cfa_off, saved.cfa_expr)
                state.bp, state.ra = saved.bp, saved.ra
        elif op in (0x0C, 0x12):  # def_cfa, def_cfa_sf
            state.cfa_reg, pos = _uleb(program, pos)
            if op == 0x12:
                off, pos = _sleb(program, pos)
                state.cfa_off = off * cie.data_align
            else:
                state.cfa_off, pos = _uleb(program, pos)
            state.cfa_expr = False
        elif op == 0x0D:  # def_cfa_register
            state.cfa_reg, pos = _uleb(program, pos)
            state.cfa_expr = False
        elif op in (0x0E, 0x13):  # def_cfa_offset, def_cfa_offset_sf
            if op == 0x13:
                off, pos = _sleb(program, pos)
                state.cfa_off = off * cie.data_align
            else:
                state.cfa_off, pos = _uleb(program, pos)
        elif op == 0x0F:  # def_cfa_expression
            size, pos = _uleb(program, pos)
            pos += size
            state.cfa_expr = True
        elif op in (0x10, 0x16):  # expression, val_expression
            reg, pos = _uleb(program, pos)
            size, pos = _uleb(program, pos)
            pos += size
            _set_reg(state, reg, ("expression", 0))
        elif op == 0x2E:  # GNU_args_size
            _size, pos = _uleb(program, pos)
        else:
            raise CfiError(f"CFA instruction {op:#x}")
    return loc


def _parse_cie(data: bytes, pos: int, end: int, section_addr: int) -> _Cie:
    version = data[pos]
    pos += 1
    aug_end = data.index(b"\0", pos)
    aug = data[pos:aug_end].decode("ascii", "replace")
    pos = aug_end + 1
    if "eh" in aug:
        pos += 8
    code_align, pos = _uleb(data, pos)
    data_align, pos = _sleb(data, pos)
    if version == 1:
        ra_reg = data[pos]
        pos += 1
    else:
        ra_reg, pos = _uleb(data, pos)
    fde_enc = 0x00
    has_aug = aug.startswith("z")
    if has_aug:
        aug_len, pos = _uleb(data, pos)
        aug_stop = pos + aug_len
        for ch in aug[1:]:
            if ch == "R":
                fde_enc = data[pos]
                pos += 1
            elif ch == "L":
                pos += 1
            elif ch == "P":
                enc = data[pos]
                _p, pos = _pointer(data, pos + 1, enc & 0x7F, section_addr)
        pos = aug_stop
    return _Cie(code_align, data_align, ra_reg, fde_enc, has_aug, bytes(data[pos:end]))


def read_fdes(data: bytes, section_addr: int) -> Iterator[Fde]:
    """The functions of an ``.eh_frame`` section (its bytes and its virtual address), in
    section order. Stops at the terminator or the first entry it cannot read."""
    cies: Dict[int, Tuple[_Cie, _State]] = {}
    pos = 0
    size = len(data)
    while pos + 4 <= size:
        length = struct.unpack_from("<I", data, pos)[0]
        if length == 0:
            return
        start = pos + 4
        if length == 0xFFFFFFFF:
            length = struct.unpack_from("<Q", data, start)[0]
            start += 8
        end = start + length
        if end > size:
            return
        cie_ptr = struct.unpack_from("<I", data, start)[0]
        body = start + 4
        try:
            if cie_ptr == 0:
                cie = _parse_cie(data, body, end, section_addr)
                state = _State()
                _run(cie.initial, cie, state, None, 0, [], [])
                cies[pos] = (cie, state)
            else:
                found = cies.get(start - cie_ptr)
                if found is not None:
                    yield _parse_fde(data, body, end, section_addr, *found)
        except (CfiError, IndexError, struct.error, ValueError):
            return
        pos = end


def _parse_fde(data: bytes, pos: int, end: int, section_addr: int, cie: _Cie,
               initial: _State) -> Fde:
    pc_begin, pos = _pointer(data, pos, cie.fde_enc, section_addr)
    pc_range, pos = _pointer(data, pos, cie.fde_enc & 0x0F, section_addr)
    if cie.has_aug_data:
        aug_len, pos = _uleb(data, pos)
        pos += aug_len
    starts: List[int] = []
    rows: List[_Row] = []
    state = initial.copy()
    loc = _run(bytes(data[pos:end]), cie, state, initial, pc_begin, starts, rows)
    starts.append(loc)
    rows.append(state.row())
    return Fde(pc_begin, pc_begin + pc_range, starts, rows)
