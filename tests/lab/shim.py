"""Container init shim: runs as the first process of a lab container, then execs its command.

The kubelet starts `nsenter --net=… unshare --pid --fork --mount-proc … python3 shim.py SPEC`.
Inside the new namespaces the shim joins the container's cgroup (so only the container's own
processes are in it, never the unshare parent), bind-mounts the volumes, sets the hostname
and execs the command, which becomes PID 1 of the container like under containerd.
Standard library only: it runs under whatever python3 the lab runs under.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384


def _mount(src: str, dst: str, flags: int, fstype: str = "") -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(src.encode(), dst.encode(), fstype.encode() if fstype else None, flags,
                  None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    error_file = spec["error_file"]
    try:
        for procs in spec.get("cgroup_procs", []):
            with open(procs, "w") as f:
                f.write("0")
        if spec.get("mount_proc"):
            # a pidns joined with nsenter: /proc must show that namespace
            _mount("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, fstype="proc")
        for src, dst, ro in spec.get("mounts", []):
            _mount(src, dst, MS_BIND | MS_REC)
            if ro:
                _mount(src, dst, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
        if spec.get("hostname"):
            socket.sethostname(spec["hostname"])
        os.chdir(spec.get("cwd") or "/")
    except OSError as exc:
        with open(error_file, "w") as f:
            f.write(f"failed to create containerd task: failed to create shim task: {exc}")
        return 128
    argv = spec["argv"]
    env = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        with open(error_file, "w") as f:
            f.write(
                "failed to create containerd task: failed to create shim task: OCI runtime "
                "create failed: runc create failed: unable to start container process: exec: "
                f'"{argv[0]}": {"executable file not found in $PATH" if exc.errno == 2 else exc}'
            )
        return 128
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
