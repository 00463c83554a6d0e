"""The demo node's network: a network namespace joined to the host by one veth pair.

The pair carries a private /30 used only between the host and this namespace (the
kubelet stand-in probes Envoy through it, as a kubelet probes a pod IP). The namespace
gets no default route, so nothing in it can reach beyond the host end of the pair.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from typing import List, Optional

from ..errors import RunFailed

#: The /30 blocks are carved from this range; a block already used on the host is skipped.
POOL = ipaddress.IPv4Network("10.211.0.0/16")


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RunFailed(
            f"`ip {' '.join(args)}` failed ({detail[-1] if detail else proc.returncode}); "
            "the demo needs root and the iproute2 tools"
        )
    return proc


def _networks_in_use() -> List[ipaddress.IPv4Network]:
    """Networks of the host's addresses and routes, so a chosen block never overlaps them."""
    used: List[ipaddress.IPv4Network] = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        out = run_ip(*args, check=False).stdout
        for line in out.splitlines():
            for word in line.split():
                if "/" in word or word[:1].isdigit():
                    try:
                        used.append(ipaddress.IPv4Network(word, strict=False))
                    except ValueError:
                        continue
    return used


def choose_block(seed: int) -> ipaddress.IPv4Network:
    """A free /30 in :data:`POOL`, starting at one derived from ``seed`` (the demo's PID)."""
    blocks = 1 << (30 - POOL.prefixlen)
    used = _networks_in_use()
    for step in range(blocks):
        index = (seed + step) % blocks
        block = ipaddress.IPv4Network((int(POOL.network_address) + 4 * index, 30))
        if not any(block.overlaps(net) for net in used if net.prefixlen > 0):
            return block
    raise RunFailed(f"no free /30 left in {POOL}; remove stale demo interfaces with `ip link`")


@dataclass
class NodeNetwork:
    """A namespace ``netns`` and veth ``host_if`` (host side) / ``node_if`` (inside)."""

    netns: str
    host_if: str
    node_if: str
    block: ipaddress.IPv4Network
    created_netns: bool = False
    created_link: bool = False

    @property
    def host_ip(self) -> str:
        return str(self.block.network_address + 1)

    @property
    def node_ip(self) -> str:
        return str(self.block.network_address + 2)

    @classmethod
    def plan(cls, prefix: str, seed: int, short: str) -> NodeNetwork:
        """Names and addresses; ``short`` keeps interface names within 15 characters."""
        return cls(
            netns=prefix, host_if=f"{short}h"[:15], node_if=f"{short}n"[:15],
            block=choose_block(seed),
        )

    def create(self) -> None:
        run_ip("netns", "add", self.netns)
        self.created_netns = True
        run_ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if)
        self.created_link = True
        run_ip("link", "set", self.node_if, "netns", self.netns)
        run_ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        run_ip("link", "set", self.host_if, "up")
        run_ip("-n", self.netns, "addr", "add", f"{self.node_ip}/30", "dev", self.node_if)
        run_ip("-n", self.netns, "link", "set", self.node_if, "up")
        run_ip("-n", self.netns, "link", "set", "lo", "up")

    def exec_prefix(self) -> List[str]:
        """Argument prefix that runs a command inside the namespace (same PID, via exec)."""
        return ["ip", "netns", "exec", self.netns]

    def remove(self) -> Optional[str]:
        """Delete the link and the namespace; returns a problem to report, if any."""
        problems = []
        if self.created_link:
            proc = run_ip("link", "del", self.host_if, check=False)
            # The peer vanishes with the namespace too; only a real failure matters.
            if proc.returncode == 0 or "Cannot find device" in proc.stderr:
                self.created_link = False
            else:
                problems.append(proc.stderr.strip())
        if self.created_netns:
            proc = run_ip("netns", "del", self.netns, check=False)
            if proc.returncode == 0:
                self.created_netns = False
            else:
                problems.append(proc.stderr.strip())
        return "; ".join(problems) or None

