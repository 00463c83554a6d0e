"""What a container of a pulled image runs, decided as kubelet + containerd decide it.

Pure functions from the image config and the pod spec to the process (argv, env, working
directory, user), its capabilities and the kubelet-managed /etc files; the shim (shim.py)
then builds the container's root filesystem and execs the process inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Linux capability numbers (linux/capability.h).
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
        "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
        "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
        "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
        "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
        "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]

#: containerd's default capability set for containers that are not privileged.
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                "AUDIT_WRITE"]

HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"


class SpecError(Exception):
    """The pod and image together do not make a runnable container (CreateContainerError)."""


def process(config: Dict[str, Any], container: Dict[str, Any], pod_env: Dict[str, str],
            expand: Any) -> Tuple[List[str], Dict[str, str], str]:
    """argv, environment and working directory: the image's unless the pod overrides them.

    `command` replaces the Entrypoint and drops the image's Cmd; `args` replaces Cmd; the
    pod's env adds to and overrides the image's Env. `expand` does kubelet's $(VAR)
    expansion of command and args (with the pod's variables only, as kubelet does).
    """
    command = [expand(str(x)) for x in container.get("command") or []]
    args = [expand(str(x)) for x in container.get("args") or []]
    entrypoint = list(config.get("Entrypoint") or [])
    cmd = list(config.get("Cmd") or [])
    if command:
        argv = command + args
    elif args:
        argv = entrypoint + args
    else:
        argv = entrypoint + cmd
    if not argv:
        raise SpecError("failed to generate container spec: no command specified")
    env: Dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(pod_env)
    cwd = container.get("workingDir") or config.get("WorkingDir") or "/"
    return argv, env, cwd


def _lookup(path: Path, name: str, field: int) -> Optional[str]:
    """Field `field` of the /etc/passwd or /etc/group line for `name` (or None)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > field and (parts[0] == name or parts[2] == name):
            return parts[field]
    return None


def user(config: Dict[str, Any], rootfs: Path, container: Dict[str, Any],
         pod_spec: Dict[str, Any]) -> Tuple[int, int, List[int]]:
    """(uid, gid, supplementary groups): securityContext over the image's `User`."""
    csc = container.get("securityContext") or {}
    psc = pod_spec.get("securityContext") or {}
    name, _, group = str(config.get("User") or "").partition(":")
    uid_text = str(csc.get("runAsUser", psc.get("runAsUser", name or 0)))
    if not uid_text.isdigit():
        found = _lookup(rootfs / "etc/passwd", uid_text, 2)
        if found is None:
            raise SpecError(f'failed to generate container spec: unable to find user '
                            f'{uid_text}: no matching entries in passwd file')
        uid_text = found
    gid_value = csc.get("runAsGroup", psc.get("runAsGroup"))
    if gid_value is None and group:
        gid_value = group if group.isdigit() else _lookup(rootfs / "etc/group", group, 2)
    if gid_value is None:
        gid_value = _lookup(rootfs / "etc/passwd", uid_text, 3) or 0
    groups = [int(g) for g in psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        groups.append(int(psc["fsGroup"]))
    return int(uid_text), int(gid_value), groups


def home(rootfs: Path, uid: int) -> str:
    """The user's home directory from the image's /etc/passwd (runc sets HOME from it)."""
    return _lookup(rootfs / "etc/passwd", str(uid), 5) or "/"


def capabilities(container: Dict[str, Any]) -> Optional[List[int]]:
    """Capability numbers the process keeps; None for privileged (every capability)."""
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return None
    caps = sc.get("capabilities") or {}

    def names(key: str) -> List[str]:
        return [str(x).upper().removeprefix("CAP_") for x in caps.get(key) or []]

    # containerd's order: ALL in add, then ALL in drop, then single adds, then single drops
    keep = set(DEFAULT_CAPS)
    if "ALL" in names("add"):
        keep = set(CAPS)
    if "ALL" in names("drop"):
        keep = set()
    keep |= {n for n in names("add") if n in CAPS}
    keep -= set(names("drop"))
    return sorted(CAPS.index(n) for n in keep)


def etc_files(folder: Path, hostname: str, pod_ip: str, host_network: bool) -> Dict[str, str]:
    """Write the kubelet-managed /etc/hosts, /etc/hostname and /etc/resolv.conf of a pod.

    The lab runs no cluster DNS, so resolv.conf is the node's (as with dnsPolicy Default).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if host_network:
        hosts = Path("/etc/hosts").read_text(errors="replace")
    else:
        hosts = (HOSTS_HEADER + "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost "
                 "ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\n"
                 "fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
        if pod_ip:
            hosts += f"{pod_ip}\t{hostname}\n"
    out = {"/etc/hosts": folder / "etc-hosts", "/etc/hostname": folder / "hostname",
           "/etc/resolv.conf": folder / "resolv.conf"}
    out["/etc/hosts"].write_text(hosts)
    out["/etc/hostname"].write_text(hostname + "\n")
    try:
        resolv = Path("/etc/resolv.conf").read_text(errors="replace")
    except OSError:
        resolv = ""
    out["/etc/resolv.conf"].write_text(resolv)
    return {k: str(v) for k, v in out.items()}
