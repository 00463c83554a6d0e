"""The node pod and its ConfigMap: the ONE place their manifests are written.

Everything security-relevant about what this tool runs on a cluster is decided here and
asserted by tests/unit/test_k8s_podspec.py (docs/design.md §5). The manifests are plain dicts
in the API's own JSON shape, so ``--dry-run`` prints exactly what would be sent.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .targets import ResolvedTarget

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubectl-offwake"
NAME_KEY = "app.kubernetes.io/name"
NAME = "offwake-collector"
RUN_KEY = "app.kubernetes.io/instance"  # the run id
NODE_ANNOTATION = "kubectl-offwake/node"
TARGETS_ANNOTATION = "kubectl-offwake/targets"
SECURITY_ANNOTATION = "kubectl-offwake/security"

#: Selects every collector pod and ConfigMap of any run (``kubectl offwake cleanup`` uses
#: it); the objects of ``setup`` carry managed-by too, but not this name.
COLLECTOR_SELECTOR = f"{MANAGED_BY_KEY}={MANAGED_BY},{NAME_KEY}={NAME}"

DEFAULT_COLLECTOR_NAMESPACE = "offwake-system"
#: The interpreter of the collector image (image/build): Debian's, which carries BCC.
PYTHON = "python3"

COLLECTOR_DIR = "/opt/offwake"
ZIPAPP_KEY = "collector.pyz"
COLLECTOR_CONTAINER = "collector"

#: The first words of what :data:`VERIFY` writes when it refuses (the plugin looks for them).
REFUSAL = "offwake-verify:"
#: Runs before anything from the ConfigMap: hashes the zipapp's bytes and runs exactly those
#: bytes (a private copy in the pod's /tmp, so a file swapped after the check is never read)
#: only when their sha256 is the one the pod spec carries. It lives in the pod spec, with
#: the hash, so nothing in the ConfigMap can skip or change the comparison; ``-I`` keeps the
#: environment and the working directory out of the interpreter.
VERIFY = f"""import hashlib,os,runpy,sys,tempfile
want,path=sys.argv[1:3]
try:
    data=open(path,'rb').read()
except OSError as e:
    sys.exit(f'{REFUSAL} cannot read {{path}}: {{e.strerror}}')
got=hashlib.sha256(data).hexdigest()
if got!=want:
    sys.exit(f'{REFUSAL} {{path}} has sha256 {{got}}, not {{want}}; not running it')
copy=os.path.join(tempfile.mkdtemp(prefix='offwake-'),'collector.pyz')
with open(copy,'xb') as f:
    f.write(data)
sys.argv=[copy,*sys.argv[3:]]
runpy.run_path(copy,run_name='__main__')
"""

#: How long past the trace's duration the pod may live: image pull, BPF compile, flush.
DEADLINE_MARGIN_S = 90
#: Seconds the collector gets between SIGTERM and SIGKILL to flush its last snapshot.
GRACE_PERIOD_S = 30
#: How often the collector sends a snapshot (commit point of the stream).
DEFAULT_INTERVAL_S = 2.0

SECURITY_NOTE = (
    "privileged: BCC needs bpf() and perf_event_open() on sched tracepoints, which the "
    "runtime's default seccomp and AppArmor profiles block, plus CAP_BPF+CAP_PERFMON "
    "(CAP_SYS_ADMIN before Linux 5.8), CAP_SYS_PTRACE to read /proc/PID/maps and "
    "/proc/PID/root of other pods for symbols, and tracefs. A capability list would need "
    "SYS_ADMIN and seccomp/AppArmor Unconfined anyway, which is privileged in all but "
    "name, and kernels differ in what suffices; so this short-lived pod is privileged, "
    "in its own namespace, with read-only host mounts, a read-only root filesystem, no "
    "service-account token and a hard deadline."
)

#: Host paths the collector reads, all mounted read-only at the same path.
HOST_MOUNTS: Dict[str, str] = {
    "debugfs": "/sys/kernel/debug",
    "tracefs": "/sys/kernel/tracing",
    "modules": "/lib/modules",
    "usr-src": "/usr/src",
    "cgroup": "/sys/fs/cgroup",
}

RESOURCES = {
    # BCC compiles the BPF program with LLVM at start: that is the memory peak.
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


def new_run_id() -> str:
    """Short, lowercase, DNS-safe and unique enough to tell concurrent runs apart."""
    return secrets.token_hex(4)


@dataclass
class NodePodOptions:
    """What varies between runs; everything else is fixed policy above."""

    run_id: str
    node: str
    image: str
    collector_sha256: str  # of the zipapp in the ConfigMap; the pod checks it before running
    namespace: str = DEFAULT_COLLECTOR_NAMESPACE
    duration_s: float = 30.0
    interval_s: float = DEFAULT_INTERVAL_S
    targets: Optional[List[ResolvedTarget]] = None
    image_pull_policy: str = "IfNotPresent"
    #: More collector options, as the user gave them (the map sizes).
    collector_args: List[str] = field(default_factory=list)


def _dns_label(text: str) -> str:
    text = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return text or "node"


def object_name(run_id: str, node: str) -> str:
    """``offwake-<run>-<node>``, a valid pod/ConfigMap name (≤ 63 chars)."""
    prefix = f"offwake-{run_id}-"
    return (prefix + _dns_label(node))[:63].rstrip("-")


def labels(run_id: str) -> Dict[str, str]:
    return {MANAGED_BY_KEY: MANAGED_BY, NAME_KEY: NAME, RUN_KEY: run_id}


def deadline_seconds(duration_s: float) -> int:
    """``activeDeadlineSeconds``: the pod is stopped this long after it started."""
    return int(math.ceil(duration_s)) + DEADLINE_MARGIN_S


def zipapp_sha256(zipapp: bytes) -> str:
    return hashlib.sha256(zipapp).hexdigest()


def collector_command(opts: NodePodOptions) -> List[str]:
    """The collector's argv: :data:`VERIFY` with the zipapp's hash and path, then the
    collector's own options, one ``--container-id`` per target on this node."""
    if not re.fullmatch(r"[0-9a-f]{64}", opts.collector_sha256):
        raise ValueError("collector_sha256 must be the zipapp's sha256 in hex")
    # -I: no PYTHON* variables, user site or working directory; -u: records go out as written
    argv = [PYTHON, "-I", "-u", "-c", VERIFY, opts.collector_sha256,
            f"{COLLECTOR_DIR}/{ZIPAPP_KEY}"]
    for target in opts.targets or []:
        # with its runtime prefix: the collector matches the runtime's cgroup naming
        argv += ["--container-id", target.qualified_id if target.runtime
                 else target.container_id]
    argv += [
        "--duration", _num(opts.duration_s),
        "--interval", _num(opts.interval_s),
        "--node-name", opts.node,
        *opts.collector_args,
    ]
    return argv


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def node_pod(opts: NodePodOptions) -> dict:
    """The collector pod for one node (docs/design.md §5)."""
    name = object_name(opts.run_id, opts.node)
    volumes: List[dict] = [
        {"name": "collector", "configMap": {"name": name, "defaultMode": 0o444}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},  # kheaders unpack here
    ]
    mounts: List[dict] = [
        {"name": "collector", "mountPath": COLLECTOR_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for vol, path in HOST_MOUNTS.items():
        volumes.append({"name": vol, "hostPath": {"path": path}})
        mounts.append({"name": vol, "mountPath": path, "readOnly": True})
    targets = ",".join(t.label() for t in opts.targets or [])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": opts.namespace,
            "labels": labels(opts.run_id),
            "annotations": {
                "sidecar.istio.io/inject": "false",
                NODE_ANNOTATION: opts.node,
                TARGETS_ANNOTATION: targets,
                SECURITY_ANNOTATION: SECURITY_NOTE,
            },
        },
        "spec": {
            "nodeName": opts.node,
            "hostPID": True,
            "hostNetwork": False,
            "hostIPC": False,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "activeDeadlineSeconds": deadline_seconds(opts.duration_s),
            "terminationGracePeriodSeconds": GRACE_PERIOD_S,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": COLLECTOR_CONTAINER,
                "image": opts.image,
                "imagePullPolicy": opts.image_pull_policy,
                "command": collector_command(opts),
                "securityContext": {
                    "privileged": True,
                    "runAsUser": 0,
                    "readOnlyRootFilesystem": True,
                },
                "resources": {k: dict(v) for k, v in RESOURCES.items()},
                "volumeMounts": mounts,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
            "volumes": volumes,
        },
    }


def collector_configmap(opts: NodePodOptions, zipapp: bytes) -> dict:
    """The ConfigMap carrying the collector zipapp (owner set once the pod exists).

    Immutable: its bytes cannot be changed after creation (only replaced by a delete and
    create, which the pod's hash check refuses).
    """
    if zipapp_sha256(zipapp) != opts.collector_sha256:
        raise ValueError("the zipapp is not the one whose sha256 the pod carries")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(opts.run_id, opts.node),
            "namespace": opts.namespace,
            "labels": labels(opts.run_id),
        },
        "immutable": True,
        "binaryData": {ZIPAPP_KEY: base64.b64encode(zipapp).decode("ascii")},
    }


def owner_reference(pod: dict) -> dict:
    """Makes the ConfigMap go when the pod goes (garbage collection)."""
    meta = pod["metadata"]
    return {
        "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"],
        "blockOwnerDeletion": False, "controller": False,
    }


def manifests_yaml(objects: List[dict]) -> str:
    """Objects as a YAML stream, each preceded by a comment saying why it looks so."""
    import yaml

    dumper = _block_dumper()
    docs = []
    for obj in objects:
        head = f"# {obj.get('kind')} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        if obj.get("kind") == "Pod":
            head += "\n" + "\n".join("# " + line for line in _wrap(SECURITY_NOTE, 90))
        elif obj.get("kind") == "ConfigMap":
            head += ("\n# The collector zipapp (stdlib + BCC only), the same version as this "
                     "plugin.\n# Immutable; the pod runs it only if its sha256 is the one in "
                     "the pod's command.\n# Owned by the pod once it exists, so it goes when "
                     "the pod goes.")
        docs.append(head + "\n" + yaml.dump(obj, Dumper=dumper, sort_keys=False,
                                             width=1_000_000))
    return "---\n".join(docs)


def _block_dumper() -> type:
    """A safe YAML dumper writing multi-line strings (the hash check) as ``|`` blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def _wrap(text: str, width: int) -> List[str]:
    import textwrap

    return textwrap.wrap(text, width)
