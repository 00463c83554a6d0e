"""Pushing the image archive to a registry with skopeo.

Plain HTTP and unverified TLS only for a registry on this machine (127.0.0.1, ::1,
localhost): a test or lab registry. Every other registry gets HTTPS with verification and
the credentials skopeo finds (``skopeo login``, ``$REGISTRY_AUTH_FILE``).
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from typing import Tuple

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
_REF = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                  r"(?::[\w][\w.-]{0,127})?")


class PushError(RuntimeError):
    """The image could not be pushed."""


def split_ref(ref: str) -> Tuple[str, str]:
    """(registry host[:port], the rest) of an image reference; ValueError if malformed."""
    if "://" in ref or "@" in ref:
        raise ValueError(f"{ref!r} is not an image reference like HOST[:PORT]/NAME[:TAG]")
    head, _, rest = ref.partition("/")
    is_host = "." in head or ":" in head or head == "localhost"
    if not rest or not is_host:
        raise ValueError(f"{ref!r} names no registry; write it as HOST[:PORT]/NAME[:TAG] "
                         "(for example 127.0.0.1:5000/offwake-collector:dev)")
    if not _REF.fullmatch(rest):
        raise ValueError(f"{ref!r}: {rest!r} is not a valid repository name and tag")
    return head, rest


def is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in LOCAL_HOSTS


def check_reachable(host: str, timeout: float = 10.0) -> None:
    """Any HTTP answer from /v2/ (even 401) means a registry is there."""
    schemes = ("https", "http") if is_local(host) else ("https",)
    reasons = []
    for scheme in schemes:
        url = f"{scheme}://{host}/v2/"
        try:
            with _opener(scheme, verify=not is_local(host)).open(url, timeout=timeout):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            reasons.append(f"{scheme}: {reason}")
    raise PushError(f"cannot reach a registry at {host} ({'; '.join(reasons)}); "
                    "start it or correct the reference")


def _opener(scheme: str, verify: bool) -> urllib.request.OpenerDirector:
    """No certificate check and no proxy for a registry on this machine."""
    handlers: list = [] if verify else [urllib.request.ProxyHandler({})]
    if scheme == "https":
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


def push(archive: str, ref: str) -> str:
    """Copy the oci-archive to ``docker://ref``; returns the digest the registry holds."""
    host, _ = split_ref(ref)
    with tempfile.TemporaryDirectory() as tmp:
        digest_file = os.path.join(tmp, "digest")
        argv = ["skopeo", "copy", "--quiet", "--preserve-digests",
                "--digestfile", digest_file]
        if is_local(host):
            argv.append("--dest-tls-verify=false")
        argv += [f"oci-archive:{archive}", f"docker://{ref}"]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            detail = lines[-1] if lines else f"exit status {proc.returncode}"
            detail = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", detail)
            raise PushError(f"pushing to {ref} failed: {detail}")
        with open(digest_file, encoding="utf-8") as f:
            return f.read().strip()
