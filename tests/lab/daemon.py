"""The lab daemon: API server + controllers + kubelets in one process, until SIGTERM.

Started by `tests/lab/up` or `Lab.start()`; starts the lab's image registry (registry.py),
writes `kubeconfig`, `registry`, `lab.json` and `ready` into its state dir. On SIGTERM/SIGINT
it stops every pod and the registry, removes what the ledger lists and exits.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

import yaml

from .core import LabConfig, LabCore
from .rbac import User
from .registry import Registry, RegistryError
from .runtime import sweep
from .schema import SchemaUnavailable
from .server import LabHTTPServer, make_certificate, tls_context

DEV_RULES = [
    {"verbs": ["get", "list", "watch"], "apiGroups": [""],
     "resources": ["pods", "pods/log", "namespaces", "nodes", "configmaps"]},
    {"verbs": ["get", "list", "watch"], "apiGroups": ["apps"], "resources": ["*"]},
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
]


def kubeconfig(server: str, users: List[User], ca: bytes, namespace: str = "default") -> dict:
    """Two contexts: `lab` (cluster admin) and `lab-<user>` for every other user."""
    contexts = []
    for u in users:
        ctx = "lab" if u.name == "admin" else f"lab-{u.name}"
        contexts.append({"name": ctx, "context": {"cluster": "lab", "user": u.name,
                                                  "namespace": namespace}})
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "lab", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": u.name, "user": {"token": u.token}} for u in users],
        "contexts": contexts,
        "current-context": "lab",
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--prefix", default="offwake-lab")
    ap.add_argument("--nodes", default="lab-node-1,lab-node-2")
    ap.add_argument("--namespaces", default="default,kube-system,app")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-systemd-cgroup", action="store_true")
    ap.add_argument("--access-log", action="store_true")
    args = ap.parse_args(argv)

    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    users = [
        User("admin", secrets.token_hex(16), ["system:masters"]),
        User("dev", secrets.token_hex(16), ["system:authenticated"], [dict(r) for r in DEV_RULES]),
    ]
    config = LabConfig(
        prefix=args.prefix, state_dir=state, nodes=args.nodes.split(","),
        namespaces=args.namespaces.split(","), users=users,
        systemd_cgroup=not args.no_systemd_cgroup,
    )
    try:
        core = LabCore(config)
    except SchemaUnavailable as exc:
        print(f"lab daemon: {exc}", file=sys.stderr)
        return 1
    registry = Registry(state, core.ledger)
    try:
        core.registry = registry_address = registry.start()
    except RegistryError as exc:
        print(f"lab daemon: {exc}", file=sys.stderr)
        return 1
    cert, key = make_certificate(state)
    srv = LabHTTPServer(core, port=args.port, access_log=args.access_log,
                        tls=tls_context(cert, key))
    server_url = f"https://{srv.address}"
    core.start()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()

    config_text = yaml.safe_dump(kubeconfig(server_url, users, cert.read_bytes()))
    (state / "kubeconfig").write_text(config_text)
    (state / "lab.json").write_text(json.dumps({
        "server": server_url, "pid": os.getpid(), "prefix": args.prefix,
        "nodes": config.nodes, "tokens": {u.name: u.token for u in users},
        "kubeconfig": str(state / "kubeconfig"), "ca": str(cert), "state_dir": str(state),
        "registry": registry_address,
    }, indent=2))
    (state / "daemon.pid").write_text(str(os.getpid()))

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    (state / "ready").write_text(server_url)
    core.log(f"lab up at {server_url}, nodes {config.nodes}")
    while not stop.wait(0.5):
        pass
    core.log("lab stopping")
    (state / "ready").unlink(missing_ok=True)
    core.stop()
    srv.shutdown()
    srv.server_close()
    registry.stop()
    left = sweep(core.ledger, args.prefix, config.systemd_cgroup)
    core.log(f"lab stopped; swept {left}")
    (state / "daemon.pid").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
