"""Container init shim: runs as the first process of a lab container, then execs its command.

The kubelet starts `nsenter --net=… unshare --mount --uts [--pid --fork] … python3 shim.py
SPEC`. Inside the new namespaces the shim joins the container's cgroup (so only the
container's own processes are in it, never the unshare parent), sets up the filesystem,
sets the hostname and execs the command, which becomes PID 1 of the container like under
containerd. Two filesystems:

- stand-in images (spec without "rootfs"): the host's filesystem with the volumes
  bind-mounted at their mountPath;
- pulled images: the image's root filesystem as an overlay (the unpacked image below, a
  writable layer per container above), with /proc, /dev, /sys (+ /sys/fs/cgroup), the
  kubelet's /etc files and the volumes mounted inside it, then pivot_root into it,
  mask /proc paths and drop to the runtime default capabilities unless privileged, make
  the root read-only for readOnlyRootFilesystem, switch user, exec the image's process.

Mount sources are opened (O_PATH) on the host side and bound from /proc/self/fd after
pivot_root, so mountpoints resolve inside the container's root (an image's absolute
symlinks cannot lead outside it), as runc does. Standard library only: it runs under
whatever python3 the lab runs under, and imports nothing after leaving the host's root.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
from typing import Any, Dict, List, Optional

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
CAP_VERSION_3 = 0x20080522
SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126},
            "aarch64": {"pivot_root": 41, "capset": 91}}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: What runc masks and makes read-only in /proc and /sys for containers not privileged.
MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, dst: str, flags: int, fstype: str = "", data: str = "") -> None:
    _check(libc.mount(src.encode(), dst.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), f"mount {src} on {dst}")


def _bind(src: str, dst: str, readonly: bool, flags: int = 0) -> None:
    _mount(src, dst, MS_BIND | MS_REC | flags)
    if readonly:
        _mount(src, dst, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


def _syscall(name: str, *args: Any) -> None:
    number = SYSCALLS[os.uname().machine][name]
    _check(libc.syscall(number, *args), name)


# ------------------------------------------------------------------ host filesystem


def _host_mounts(spec: Dict[str, Any]) -> None:
    if spec.get("mount_proc"):
        # a pidns joined with nsenter: /proc must show that namespace
        _mount("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, fstype="proc")
    for src, dst, ro in spec.get("mounts", []):
        _bind(src, dst, ro)


# ------------------------------------------------------------------ image root filesystem


def _make(path: str, is_dir: bool) -> None:
    """Create a mountpoint inside the (already pivoted) root: symlinks stay inside it."""
    if is_dir:
        os.makedirs(path, exist_ok=True)
    elif not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _dev(privileged: bool, fds: Dict[str, int]) -> None:
    if privileged:
        _make("/dev", True)
        _bind(_fd_path(fds["/dev"]), "/dev", False)
    else:
        _make("/dev", True)
        _mount("tmpfs", "/dev", MS_NOSUID, "tmpfs", "mode=755,size=65536k")
        for name in DEVICES:
            _make(f"/dev/{name}", False)
            _bind(_fd_path(fds[f"/dev/{name}"]), f"/dev/{name}", False)
        _make("/dev/pts", True)
        _mount("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "devpts",
               "newinstance,ptmxmode=0666,mode=0620,gid=5")
        os.symlink("pts/ptmx", "/dev/ptmx")
        for i, name in enumerate(("stdin", "stdout", "stderr")):
            os.symlink(f"/proc/self/fd/{i}", f"/dev/{name}")
        os.symlink("/proc/self/fd", "/dev/fd")
        os.symlink("/proc/kcore", "/dev/core")
    _make("/dev/shm", True)
    _mount("shm", "/dev/shm", MS_NOSUID | MS_NODEV | MS_NOEXEC, "tmpfs", "mode=1777,size=65536k")


def _sys(privileged: bool, fds: Dict[str, int]) -> None:
    _make("/sys", True)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY)
    _mount("sysfs", "/sys", flags, "sysfs")
    _bind(_fd_path(fds["/sys/fs/cgroup"]), "/sys/fs/cgroup", not privileged)


def _mask() -> None:
    for path in MASKED:
        if os.path.isdir(path):
            _mount("tmpfs", path, MS_RDONLY, "tmpfs")
        elif os.path.exists(path):
            _mount("/dev/null", path, MS_BIND)
    for path in READONLY:
        if os.path.exists(path):
            _mount(path, path, MS_BIND | MS_REC)
            _mount(path, path, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


def _drop_bounding(keep: List[int]) -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


def _set_capabilities(keep: List[int]) -> None:
    mask = [0, 0]
    for cap in keep:
        mask[cap // 32] |= 1 << (cap % 32)
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(mask[0], mask[0], 0, mask[1], mask[1], 0)
    _syscall("capset", header, data)


def _rootfs(spec: Dict[str, Any]) -> None:
    rootfs = spec["rootfs"]
    privileged = rootfs["capabilities"] is None
    # mount sources, opened while the host's root is still ours
    sources: Dict[str, str] = {"/sys/fs/cgroup": "/sys/fs/cgroup",
                               **{f"/dev/{d}": f"/dev/{d}" for d in DEVICES}, "/dev": "/dev"}
    sources.update(rootfs["etc"])
    for i, (src, _dst, _ro) in enumerate(spec.get("mounts", [])):
        sources[f"volume{i}"] = src
    fds = {key: os.open(src, os.O_PATH | os.O_CLOEXEC) for key, src in sources.items()}
    is_dir = {key: os.path.isdir(src) for key, src in sources.items()}
    merged = rootfs["merged"]
    _mount("overlay", merged, 0, "overlay",
           f"lowerdir={rootfs['lower']},upperdir={rootfs['upper']},workdir={rootfs['work']}")
    os.chdir(merged)
    _syscall("pivot_root", b".", b".")
    # the old root is stacked on "/" (our cwd) until the umount below; paths from "/"
    # resolve in the image's root
    _make("/proc", True)
    _mount("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "proc")
    _dev(privileged, fds)
    _sys(privileged, fds)
    for path in rootfs["etc"]:
        _make(path, False)
        _bind(_fd_path(fds[path]), path, False)
    for i, (_src, dst, ro) in enumerate(spec.get("mounts", [])):
        _make(dst, is_dir[f"volume{i}"])
        _bind(_fd_path(fds[f"volume{i}"]), dst, ro)
    _make(spec.get("cwd") or "/", True)
    _check(libc.umount2(b".", MNT_DETACH), "umount the host's root")
    os.chdir("/")
    for fd in fds.values():
        os.close(fd)
    if not privileged:
        _mask()
    if rootfs["readonly"]:
        _check(libc.mount(None, b"/", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
               "remount the root read-only")


def _become(spec: Dict[str, Any]) -> None:
    """Hostname, working directory, user and capabilities, as the last steps before exec."""
    rootfs: Optional[Dict[str, Any]] = spec.get("rootfs")
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    os.chdir(spec.get("cwd") or "/")
    if rootfs is None:
        return
    keep = rootfs["capabilities"]
    if keep is not None:
        _drop_bounding(keep)
    uid, gid, groups = rootfs["user"]
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)  # a non-root uid loses every capability here, as under containerd
    if keep is not None and uid == 0:
        _set_capabilities(keep)


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    # opened before leaving the host's root, so a failure can still be reported
    err_fd = os.open(spec["error_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC)
    try:
        for procs in spec.get("cgroup_procs", []):
            with open(procs, "w") as f:
                f.write("0")
        if spec.get("rootfs"):
            _rootfs(spec)
        else:
            _host_mounts(spec)
        _become(spec)
    except OSError as exc:
        os.write(err_fd, ("failed to create containerd task: failed to create shim task: "
                          f"OCI runtime create failed: {exc}").encode())
        return 128
    argv = spec["argv"]
    env = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        reason = "executable file not found in $PATH" if exc.errno == 2 else str(exc)
        os.write(err_fd, (
            "failed to create containerd task: failed to create shim task: OCI runtime "
            "create failed: runc create failed: unable to start container process: exec: "
            f'"{argv[0]}": {reason}').encode())
        return 128
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
