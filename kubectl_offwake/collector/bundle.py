"""Packs the collector into a zipapp: ``python3 collector.pyz --pid 123 ...``.

The Kubernetes side ships it in a ConfigMap (1 MiB limit), so only what the node needs goes
in: ``kubectl_offwake/wire``, ``kubectl_offwake/collector`` and the BPF source, which lands
beside the collector modules where ``bpfprog.bpf_source`` finds it. Deterministic (fixed
timestamps, sorted entries) so the same code always gives the same bytes.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import List, Optional, Tuple

from .. import __version__
from .bpfprog import SOURCE_NAME, bpf_source

_PKG_INIT = '"""kubectl-offwake collector (zipapp)."""\n\n__version__ = "{version}"\n'
_MAIN = (
    "import sys\n\n"
    "from kubectl_offwake.collector.main import main\n\n"
    "sys.exit(main())\n"
)
_STAMP = (2020, 1, 1, 0, 0, 0)


def _package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sources(sub: str) -> List[Tuple[str, str]]:
    base = os.path.join(_package_dir(), sub)
    out = []
    for name in sorted(os.listdir(base)):
        if name.endswith(".py") and name != "bundle.py":
            out.append((f"kubectl_offwake/{sub}/{name}", os.path.join(base, name)))
    return out


def build_zipapp(version: Optional[str] = None) -> bytes:
    """The zipapp's bytes (with a ``#!/usr/bin/env python3`` line)."""
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        def add(arcname: str, data: str) -> None:
            info = zipfile.ZipInfo(arcname, date_time=_STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.encode("utf-8"))

        add("__main__.py", _MAIN)
        add("kubectl_offwake/__init__.py", _PKG_INIT.format(version=version or __version__))
        for sub in ("wire", "collector"):
            for arcname, path in _sources(sub):
                with open(path, encoding="utf-8") as f:
                    add(arcname, f.read())
        add(f"kubectl_offwake/collector/{SOURCE_NAME}", bpf_source())
    return buf.getvalue()


def write_zipapp(path: str) -> str:
    """Write the zipapp to ``path`` (executable) and return the path."""
    data = build_zipapp()
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o755)
    return path
