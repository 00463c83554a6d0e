"""image/build --push into a real registry: Debian's docker-registry on a free 127.0.0.1
port (its own config and storage in a temporary directory, stopped by PID), checked
through the registry API."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import run_build

pytestmark = [pytest.mark.root, pytest.mark.slow]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, accept: str = "") -> urllib.request.addinfourl:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(req, timeout=10)


@pytest.fixture
def registry(tmp_path):
    port = _free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'storage'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n")
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # until it answers (bounded), not a timing check
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited: {(tmp_path / 'registry.log').read_text()}")
            try:
                _get(f"http://127.0.0.1:{port}/v2/").close()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        else:
            pytest.fail("docker-registry never answered on /v2/")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_push_puts_the_built_image_in_the_registry(built, registry, tmp_path):
    ref = f"{registry}/offwake-collector:test"
    proc = run_build("--out", str(tmp_path / "image.oci.tar"), "--push", ref)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layer cached" in proc.stderr, "a second build with the same inputs must be cached"
    pushed = re.search(r"^pushed digest: (sha256:[0-9a-f]{64})$", proc.stdout, re.M)
    digest = re.search(r"^digest: (sha256:[0-9a-f]{64})$", proc.stdout, re.M)
    assert pushed and digest
    # the same inputs as the session's build: the same image, and that is what was pushed
    assert digest.group(1) == built.digest == pushed.group(1)
    with _get(f"http://{registry}/v2/offwake-collector/manifests/test", OCI_MANIFEST) as resp:
        body = resp.read()
        assert resp.headers["Docker-Content-Digest"] == built.digest
        assert resp.headers["Content-Type"] == OCI_MANIFEST
    assert "sha256:" + hashlib.sha256(body).hexdigest() == built.digest
    layer = re.search(rb'"layers":\[\{[^}]*"digest":"(sha256:[0-9a-f]{64})"', body)
    assert layer
    with _get(f"http://{registry}/v2/offwake-collector/blobs/{layer.group(1).decode()}") as r:
        head = r.read(2)
    assert head == b"\x1f\x8b", "the layer blob is gzip"
