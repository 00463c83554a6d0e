"""The listening sockets a process owns, as its own network namespace shows them.

``/proc/PID/net/*`` lists the sockets of PID's network namespace (a pod's, not the node's),
and ``/proc/PID/fd`` names the socket inodes PID holds, so together they say which
addresses a process listens on and through how many sockets: Envoy opens one listening
socket per worker on a ``reuse_port`` listener and one shared socket otherwise, which is
what decides whether a new connection can wake several workers.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

PROC = "/proc"
_TCP_LISTEN = "0A"
_UNIX_ACCEPTCON = 0x00010000  # __SO_ACCEPTCON: a listening unix socket


@dataclass
class Listening:
    """What one process listens on: TCP ``host:port`` and unix paths → socket inodes."""

    tcp: Dict[str, Set[int]] = field(default_factory=dict)
    unix: Dict[str, Set[int]] = field(default_factory=dict)

    def counts(self) -> Dict[str, int]:
        """Listening sockets per TCP address (``0.0.0.0:15006`` → 2)."""
        return {address: len(inodes) for address, inodes in sorted(self.tcp.items())}


def socket_inodes(pid: int, proc: str = PROC) -> Set[int]:
    """Inodes of the sockets among PID's open file descriptors."""
    out: Set[int] = set()
    base = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(os.path.join(base, name))
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            try:
                out.add(int(target[8:-1]))
            except ValueError:
                continue
    return out


def decode_address(hex_address: str) -> Optional[str]:
    """``0100007F:3A98`` → ``127.0.0.1:15000``; IPv6 as ``[::1]:15000`` (kernel byte order:
    each 32-bit word of the address is in host order, little-endian here)."""
    host_hex, _, port_hex = hex_address.partition(":")
    try:
        port = int(port_hex, 16)
        raw = bytes.fromhex(host_hex)
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return f"{ipaddress.IPv4Address(swapped)}:{port}"
    return f"[{ipaddress.IPv6Address(swapped)}]:{port}"


def parse_tcp_listeners(text: str) -> Dict[int, str]:
    """Listening sockets in a ``/proc/net/tcp`` or ``tcp6`` table: inode → address."""
    out: Dict[int, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        address = decode_address(fields[1])
        try:
            inode = int(fields[9])
        except ValueError:
            continue
        if address is not None and inode:
            out[inode] = address
    return out


def parse_unix_listeners(text: str) -> Dict[int, str]:
    """Listening unix sockets with a path in ``/proc/net/unix``: inode → path
    (abstract names start with ``@``)."""
    out: Dict[int, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) < 8:
            continue
        try:
            flags = int(fields[3], 16)
            inode = int(fields[6])
        except ValueError:
            continue
        if flags & _UNIX_ACCEPTCON and inode:
            out[inode] = fields[7].strip()
    return out


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def listening(pid: int, proc: str = PROC) -> Listening:
    """The listening sockets PID holds, read in PID's network namespace."""
    mine = socket_inodes(pid, proc)
    found = Listening()
    tables: List[Dict[int, str]] = [parse_tcp_listeners(_read(f"{proc}/{pid}/net/{name}"))
                                    for name in ("tcp", "tcp6")]
    for table in tables:
        for inode, address in table.items():
            if inode in mine:
                found.tcp.setdefault(address, set()).add(inode)
    for inode, path in parse_unix_listeners(_read(f"{proc}/{pid}/net/unix")).items():
        if inode in mine:
            found.unix.setdefault(path, set()).add(inode)
    return found
