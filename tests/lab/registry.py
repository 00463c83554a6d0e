"""The lab's image registry: Debian's `docker-registry` (distribution 2.x) on 127.0.0.1.

The daemon starts it next to the API server, with its config and storage in the state dir,
records its PID in the ledger (so `down` stops it even if the daemon died) and writes
`127.0.0.1:PORT` to `<state>/registry`. Images are pushed to it with ordinary tools
(`skopeo copy --dest-tls-verify=false oci-archive:x.tar docker://$(cat registry)/name:tag`);
the kubelets pull from it through the registry HTTP API v2 (imagepull.py).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Optional

from .images import DIRECT
from .runtime import Ledger

BINARY = "docker-registry"
ADDRESS_FILE = "registry"

CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class RegistryError(RuntimeError):
    """The registry could not be started."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serves(address: str) -> bool:
    try:
        with DIRECT.open(f"http://{address}/v2/", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Registry:
    """One `docker-registry serve` process owned by a lab daemon."""

    def __init__(self, state_dir: Path, ledger: Ledger) -> None:
        self.dir = state_dir / "registry-data"
        self.address_file = state_dir / ADDRESS_FILE
        self.ledger = ledger
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.address = ""

    def start(self, timeout: float = 20.0) -> str:
        """Start on a free port (a few tries: another process may take the port first)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.address_file.unlink(missing_ok=True)
        log_path = self.dir.parent / "registry.log"
        for _ in range(3):
            port = _free_port()
            config = self.dir.parent / "registry.yml"
            config.write_text(CONFIG.format(root=self.dir / "storage", port=port))
            with log_path.open("ab") as log:
                try:
                    proc = subprocess.Popen([BINARY, "serve", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
                except FileNotFoundError as exc:
                    raise RegistryError(f"{BINARY} is not installed; run tests/bootstrap") \
                        from exc
            self.ledger.add_pid(proc.pid)
            address = f"127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if _serves(address):
                    self.proc, self.address = proc, address
                    self.address_file.write_text(address + "\n")
                    return address
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RegistryError(f"{BINARY} did not start; its log:\n{tail}")

    def stop(self) -> None:
        self.address_file.unlink(missing_ok=True)
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
