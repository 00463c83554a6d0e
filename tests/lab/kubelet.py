"""A kubelet per emulated node: runs the containers of pods bound to it as real processes.

Each pod gets a network namespace (loopback + an eth0 with the pod IP), a pod cgroup slice
named as the systemd cgroup driver names it, and each container a
`cri-containerd-<64 hex>.scope` under it (`crio-`/`docker-` on nodes emulating those), its
own PID, mount and UTS namespaces (unless the pod asks for the host's), volumes
bind-mounted at their mountPath. Status is written back the way a real kubelet writes it
(phase, conditions, container statuses, restarts, exit codes).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import rootfs
from .images import Image
from .logs import LogBuffer
from .pulling import STAND_IN, ImageManager, PullState, Resolved
from .runtime import (
    cgroup_kill,
    cgroup_make,
    cgroup_pids,
    cgroup_remove,
    cgroup_roots,
    children,
    netns_create,
    netns_delete,
)
from .store import Obj, now_iso

if TYPE_CHECKING:
    from .core import LabCore

SHIM = Path(__file__).with_name("shim.py")
TICK = 0.1
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def qos_class(pod: Obj) -> str:
    """Guaranteed / Burstable / BestEffort from requests and limits, like the API server."""
    spec = pod.get("spec", {})
    conts = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in conts:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_slice(pod: Obj) -> str:
    """kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice (systemd driver)."""
    uid = pod["metadata"]["uid"].replace("-", "_")
    qos = qos_class(pod)
    if qos == "Guaranteed":
        return f"kubepods.slice/kubepods-pod{uid}.slice"
    q = qos.lower()
    return f"kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice"


def _expand(text: str, env: Dict[str, str]) -> str:
    """$(VAR) expansion of command/args ($$ escapes), like the kubelet."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


@dataclass(frozen=True)
class Runtime:
    """How a container runtime names containers (systemd cgroup driver) and reports them."""

    scope_prefix: str
    id_scheme: str
    version: str

    def scope(self, cid: str) -> str:
        return f"{self.scope_prefix}-{cid}.scope"

    def container_id(self, cid: str) -> str:
        return f"{self.id_scheme}://{cid}"


RUNTIMES = {
    "containerd": Runtime("cri-containerd", "containerd", "containerd://1.7.24"),
    "crio": Runtime("crio", "cri-o", "cri-o://1.30.4"),
    "docker": Runtime("docker", "docker", "docker://26.1.4"),
}


class Container:
    """One container of a pod and its current (or last) instance."""

    def __init__(self, spec: Obj, kind: str) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.kind = kind  # "init", "sidecar" or "main"
        self.id = ""
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.pid = 0  # host pid of the container's first process
        self.cgroup = ""
        self.readers: List[threading.Thread] = []
        self.log: Optional[LogBuffer] = None
        self.previous_log: Optional[LogBuffer] = None
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "PodInitializing" if kind != "main"
                                       else "ContainerCreating"}}
        self.last_state: Obj = {}
        self.started_at = ""
        self.next_start = 0.0
        self.backoff = 0.0
        self.done = False  # will not run again
        self.oom = False
        self.error_file: Optional[Path] = None
        self.term_sent = 0.0
        self.started_once = False
        self.pull = PullState()
        self.image: Optional[Image] = None  # the pulled image of the current instance

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PodWorker:
    """Runs one pod on one node from admission to removal; a thread of its own."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.lab = kubelet.lab
        self.ns: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]
        self.pod = pod
        spec = pod["spec"]
        self.host_network = bool(spec.get("hostNetwork"))
        self.host_pid = bool(spec.get("hostPID"))
        self.share_pid = bool(spec.get("shareProcessNamespace")) and not self.host_pid
        self.pause: Optional[subprocess.Popen[bytes]] = None
        self.pause_pid = 0
        self.pause_cgroup = ""
        self.netns = "" if self.host_network else f"{self.lab.prefix}-pod-{self.uid[:8]}"
        self.dir = self.lab.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.slice = pod_slice(pod)
        self.pod_ip = ""
        self.sandbox_ready = False
        self.containers: List[Container] = []
        for c in spec.get("initContainers") or []:
            kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.containers.append(Container(c, kind))
        for c in spec.get("containers") or []:
            main = Container(c, "main")
            if spec.get("initContainers"):
                main.state = {"waiting": {"reason": "PodInitializing"}}
            self.containers.append(main)
        self.start_time = ""
        self.start_mono = 0.0
        self.phase = "Pending"
        self.init_failed = False
        self.reason = ""
        self.message = ""
        self.mountpoints: List[Path] = []
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)
        self.last_status: Optional[Obj] = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        last_error = ""
        try:
            while not self.stop_event.is_set():
                try:
                    if not self._tick():
                        return
                except Exception as exc:  # keep the lab alive; the log says what broke
                    trace = traceback.format_exc()
                    if trace != last_error:
                        self.lab.log(f"pod worker {self.ns}/{self.name} failed:\n{trace}")
                        last_error = trace
                    self._report_failure(exc)
                    time.sleep(1.0)
                time.sleep(TICK)
        finally:
            self.kubelet.forget(self.uid)

    def _report_failure(self, exc: Exception) -> None:
        """Show a runtime failure the way containerd errors show: CreateContainerError."""
        with contextlib.suppress(Exception), self.lock:
            for c in self.containers:
                if c.proc is None and not c.done:
                    c.state = {"waiting": {"reason": "CreateContainerError",
                                           "message": f"lab runtime: {exc}"}}
            self._write_status()

    def _tick(self) -> bool:
        pod = self.lab.store.get("pods", self.ns, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid:
            # force-deleted: the API object is gone already
            self._kill_all(0)
            self._teardown()
            return False
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._kill_all(float(grace))
            self._teardown()
            self.lab.store.remove("pods", self.ns, self.name)
            return False
        if not self.start_time:
            self.start_time = now_iso()
            self.start_mono = time.monotonic()
        with self.lock:
            self._reap()
            if self.phase not in ("Succeeded", "Failed"):
                self._check_deadline()
            if self.phase not in ("Succeeded", "Failed"):
                self._progress()
            self._write_status()
        return True

    def shutdown(self, grace: float) -> None:
        """Lab going down: stop this pod's containers now and remove what it made."""
        self.stop_event.set()
        with contextlib.suppress(RuntimeError):
            self.thread.join(timeout=1)
        with self.lock:
            self._kill_all(grace)
            self._teardown()

    def _event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.lab.record_event(self.pod, reason, message, type_, host=self.kubelet.name)

    # ------------------------------------------------------------ sandbox

    def _ensure_sandbox(self) -> bool:
        if self.sandbox_ready:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        ledger = self.lab.ledger
        for root in cgroup_roots(self.lab.systemd_cgroup):
            ledger.add("cgroup", path=self.slice)
            cgroup_make(root, self.slice)
        if self.host_network:
            self.pod_ip = self.kubelet.host_ip
        else:
            self.pod_ip = self.kubelet.allocate_ip()
            ledger.add("netns", name=self.netns)
            netns_create(self.netns, self.pod_ip)
        self.sandbox_ready = True
        if self.share_pid:
            self._start_pause()
        return True

    def _start_pause(self) -> None:
        """shareProcessNamespace: a pause process (the sandbox container) owns the pod pidns."""
        sid = secrets.token_hex(32)
        self.pause_cgroup = f"{self.slice}/{self.kubelet.runtime.scope(sid)}"
        procs = []
        for root in cgroup_roots(self.lab.systemd_cgroup):
            self.lab.ledger.add("cgroup", path=self.pause_cgroup)
            procs.append(str(cgroup_make(root, self.pause_cgroup) / "cgroup.procs"))
        sdir = self.dir / "sandbox"
        sdir.mkdir(parents=True, exist_ok=True)
        spec = {"cgroup_procs": procs, "mounts": [], "cwd": "/", "env": {"PATH": DEFAULT_PATH},
                "argv": ["sleep", "infinity"], "hostname": self.name,
                "error_file": str(sdir / "start-error")}
        (sdir / "spec.json").write_text(json.dumps(spec))
        cmd = (["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []) + [
            "unshare", "--mount", "--propagation", "private", "--uts", "--pid", "--fork",
            "--mount-proc", "--kill-child", "--", sys.executable, "-S", str(SHIM),
            str(sdir / "spec.json")]
        self.pause = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self.lab.ledger.add_pid(self.pause.pid)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and self.pause.poll() is None:
            kids = children(self.pause.pid)
            if kids:
                self.pause_pid = kids[0]
                self.lab.ledger.add_pid(self.pause_pid)
                return
            time.sleep(0.005)
        raise RuntimeError("the pod sandbox (pause) did not start")

    def _teardown(self) -> None:
        for c in self.containers:
            self._remove_container_cgroup(c)
        if self.pause is not None:
            for root in cgroup_roots(self.lab.systemd_cgroup):
                cgroup_kill(root / self.pause_cgroup)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.pause.wait(timeout=5)
            for root in cgroup_roots(self.lab.systemd_cgroup):
                cgroup_remove(root, self.pause_cgroup, keep_parents=[self.slice])
            self.pause = None
        if self.sandbox_ready:
            for root in cgroup_roots(self.lab.systemd_cgroup):
                cgroup_remove(root, self.slice)
            if self.netns:
                netns_delete(self.netns)
        self.lab.release_mountpoints(self.mountpoints)
        self.mountpoints.clear()
        self.sandbox_ready = False
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ volumes

    def _volume_source(self, vol: Obj) -> Tuple[Optional[Path], str]:
        """Host path backing a volume, or (None, reason) while it cannot be made yet."""
        vdir = self.dir / "volumes" / vol["name"]
        if "configMap" in vol or "secret" in vol:
            is_cm = "configMap" in vol
            src = vol["configMap"] if is_cm else vol["secret"]
            ref = src.get("name") if is_cm else src.get("secretName")
            obj = self.lab.store.get("configmaps" if is_cm else "secrets", self.ns, ref or "")
            if obj is None:
                if src.get("optional"):
                    vdir.mkdir(parents=True, exist_ok=True)
                    return vdir, ""
                kind = "configmap" if is_cm else "secret"
                return None, f'{kind} "{ref}" not found'
            data: Dict[str, bytes] = {}
            import base64
            for k, v in (obj.get("data") or {}).items():
                data[k] = v.encode() if is_cm else base64.b64decode(v)
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v)
            if (obj.get("stringData") or {}) and not is_cm:
                for k, v in obj["stringData"].items():
                    data[k] = v.encode()
            items = src.get("items")
            mode = src.get("defaultMode", 0o644)
            if vdir.exists():
                shutil.rmtree(vdir)
            vdir.mkdir(parents=True)
            pairs = [(it["key"], it["path"], it.get("mode", mode)) for it in items] if items \
                else [(k, k, mode) for k in data]
            for key, rel, m in pairs:
                if key not in data:
                    continue
                f = vdir / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data[key])
                os.chmod(f, int(m))
            return vdir, ""
        if "hostPath" in vol:
            hp = vol["hostPath"]
            p = Path(hp["path"])
            if not p.exists():
                if hp.get("type") == "DirectoryOrCreate":
                    p.mkdir(parents=True, exist_ok=True)
                    self.lab.ledger.add("mountpoint", path=str(p))
                    self.mountpoints.append(p)
                elif hp.get("type") == "FileOrCreate":
                    p.touch()
                    self.lab.ledger.add("mountpoint", path=str(p))
                    self.mountpoints.append(p)
                elif hp.get("type"):
                    return None, f"hostPath type check failed: {p} is not a {hp['type']}"
                else:
                    p.mkdir(parents=True, exist_ok=True)
                    self.lab.ledger.add("mountpoint", path=str(p))
                    self.mountpoints.append(p)
            return p, ""
        # emptyDir, projected, downwardAPI and anything else: an empty directory
        vdir.mkdir(parents=True, exist_ok=True)
        return vdir, ""

    def _mounts(self, c: Container, on_host: bool
                ) -> Tuple[Optional[List[Tuple[str, str, bool]]], str]:
        """(source, mountPath, readOnly) per volumeMount, or (None, why not yet).

        `on_host`: the container runs on the host's filesystem, so a missing mountPath is
        created there (and recorded); in an image's root the shim creates it inside.
        """
        vols = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        out: List[Tuple[str, str, bool]] = []
        for vm in c.spec.get("volumeMounts") or []:
            vol = vols.get(vm["name"])
            if vol is None:
                return None, f'volume "{vm["name"]}" not found'
            src, why = self._volume_source(vol)
            if src is None:
                return None, f'MountVolume.SetUp failed for volume "{vm["name"]}" : {why}'
            if vm.get("subPath"):
                src = src / vm["subPath"]
                if not src.exists():
                    src.mkdir(parents=True)
            dst = Path(vm["mountPath"])
            if on_host and not dst.exists():
                missing = []
                p = dst
                while not p.exists():
                    missing.append(p)
                    p = p.parent
                for m in reversed(missing):
                    self.lab.ledger.add("mountpoint", path=str(m))
                if src.is_dir():
                    dst.mkdir(parents=True, exist_ok=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.touch()
                self.mountpoints.extend(reversed(missing))
            out.append((str(src), str(dst), bool(vm.get("readOnly"))))
        return out, ""

    # ------------------------------------------------------------ env

    def _host_env(self) -> Dict[str, str]:
        """The base environment of a stand-in container (it runs the host's programs)."""
        env: Dict[str, str] = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOSTNAME": self.name,
            "HOME": "/root",
        }
        if os.environ.get("PYENV_ROOT"):
            env["PYENV_ROOT"] = os.environ["PYENV_ROOT"]
        return env

    def _env(self, c: Container) -> Dict[str, str]:
        """The variables the pod defines (envFrom, env), $(VAR)-expanded like kubelet."""
        env: Dict[str, str] = {}
        for ef in c.spec.get("envFrom") or []:
            ref = ef.get("configMapRef")
            if ref:
                cm = self.lab.store.get("configmaps", self.ns, ref["name"]) or {}
                for k, v in (cm.get("data") or {}).items():
                    env[ef.get("prefix", "") + k] = v
        for e in c.spec.get("env") or []:
            if "value" in e:
                env[e["name"]] = _expand(str(e["value"]), env)
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                val = ""
                if "fieldRef" in vf:
                    path = vf["fieldRef"]["fieldPath"]
                    val = {
                        "metadata.name": self.name,
                        "metadata.namespace": self.ns,
                        "metadata.uid": self.uid,
                        "spec.nodeName": self.kubelet.name,
                        "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
                        "status.podIP": self.pod_ip,
                        "status.hostIP": self.kubelet.host_ip,
                    }.get(path, "")
                    m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]", path)
                    if m:
                        val = (self.pod["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
                elif "configMapKeyRef" in vf:
                    ref = vf["configMapKeyRef"]
                    cm = self.lab.store.get("configmaps", self.ns, ref["name"]) or {}
                    val = (cm.get("data") or {}).get(ref["key"], "")
                env[e["name"]] = val
        return env

    # ------------------------------------------------------------ containers

    def _image(self, c: Container) -> Optional[Resolved]:
        """The image to start `c` from (STAND_IN or a pulled Image), else None (waiting)."""
        image = c.spec.get("image", "")

        def event(reason: str, message: str, type_: str) -> None:
            self._event(reason, message, type_)

        resolved, waiting = self.kubelet.images.ensure(
            image, c.spec.get("imagePullPolicy", "IfNotPresent"), c.pull, event)
        if resolved is None:
            c.state = {"waiting": waiting}
        return resolved

    def _rootfs_spec(self, c: Container, image: Image, cdir: Path) -> Dict[str, Any]:
        """The shim's instructions for a container of a pulled image (see shim.py)."""
        for d in ("upper", "work", "merged"):
            (cdir / d).mkdir(parents=True, exist_ok=True)
        config = image.config.get("config") or {}
        hostname = os.uname().nodename if self.host_network else self.name
        sc = c.spec.get("securityContext") or {}
        return {
            "lower": str(image.rootfs), "upper": str(cdir / "upper"),
            "work": str(cdir / "work"), "merged": str(cdir / "merged"),
            "readonly": bool(sc.get("readOnlyRootFilesystem")),
            "capabilities": rootfs.capabilities(c.spec),
            "user": list(rootfs.user(config, image.rootfs, c.spec, self.pod["spec"])),
            "etc": rootfs.etc_files(self.dir / "etc", hostname, self.pod_ip,
                                    self.host_network),
        }

    def _process(self, c: Container, image: Optional[Image], cdir: Path
                 ) -> Tuple[List[str], Dict[str, str], str, Dict[str, object]]:
        """argv, env, working directory and extra shim instructions of a container."""
        pod_env = self._env(c)

        def expand(text: str) -> str:
            return _expand(text, pod_env)

        if image is not None:
            argv, env, cwd = rootfs.process(image.config.get("config") or {}, c.spec,
                                            pod_env, expand)
            spec = self._rootfs_spec(c, image, cdir)
            env.setdefault("HOSTNAME", self.name)
            env.setdefault("HOME", rootfs.home(image.rootfs, spec["user"][0]))
            return argv, env, cwd, {"rootfs": spec}
        # a stand-in runs this machine's programs, with this machine's PATH
        command = [expand(str(x)) for x in c.spec.get("command") or []]
        args = [expand(str(x)) for x in c.spec.get("args") or []]
        argv = command + args if command or args else ["sleep", "infinity"]
        return argv, {**self._host_env(), **pod_env}, c.spec.get("workingDir") or "/", {}

    def _start(self, c: Container) -> None:
        resolved = self._image(c)
        if resolved is None:
            return
        image = None if resolved == STAND_IN else resolved
        assert image is None or isinstance(image, Image)
        mounts, why = self._mounts(c, on_host=image is None)
        if mounts is None:
            c.state = {"waiting": {"reason": "ContainerCreating", "message": why}}
            self._event("FailedMount", why, "Warning")
            return
        cdir = self.dir / "containers" / f"{c.name}-{c.restart_count}"
        cdir.mkdir(parents=True, exist_ok=True)
        try:
            argv, env, cwd, extra = self._process(c, image, cdir)
        except rootfs.SpecError as exc:
            if c.state.get("waiting", {}).get("message") != str(exc):
                self._event("Failed", f"Error: {exc}", "Warning")
            c.state = {"waiting": {"reason": "CreateContainerError", "message": str(exc)}}
            return
        c.image = image
        c.id = secrets.token_hex(32)
        c.cgroup = f"{self.slice}/{self.kubelet.runtime.scope(c.id)}"
        procs_files = []
        for root in cgroup_roots(self.lab.systemd_cgroup):
            self.lab.ledger.add("cgroup", path=c.cgroup)
            procs_files.append(str(cgroup_make(root, c.cgroup) / "cgroup.procs"))
        c.error_file = cdir / "start-error"
        spec = {
            "cgroup_procs": procs_files,
            "mounts": mounts,
            "cwd": cwd,
            "env": env,
            "argv": argv,
            "hostname": "" if self.host_network else self.name,
            "error_file": str(c.error_file),
            **extra,
        }
        spec_file = cdir / "spec.json"
        cmd: List[str] = []
        enter = [f"--net=/run/netns/{self.netns}"] if self.netns else []
        if self.share_pid:
            # join the pause process's pidns (nsenter forks); /proc is remounted inside
            enter.append(f"--pid=/proc/{self.pause_pid}/ns/pid")
            spec["mount_proc"] = image is None
        spec_file.write_text(json.dumps(spec))
        if enter:
            cmd += ["nsenter", *enter, "--"]
        cmd += ["unshare", "--mount", "--propagation", "private"]
        if not self.host_network:
            cmd += ["--uts"]
        if not self.host_pid and not self.share_pid:
            cmd += ["--pid", "--fork", "--kill-child"]
            if image is None:
                cmd += ["--mount-proc"]
        cmd += ["--", sys.executable, "-S", str(SHIM), str(spec_file)]
        if c.log is not None:
            c.previous_log = c.log
        c.log = LogBuffer(cdir / "log")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd="/", start_new_session=True,
        )
        self.lab.ledger.add_pid(proc.pid)
        c.proc = proc
        c.pid = proc.pid
        if not self.host_pid:  # the container's first process is the launcher's child
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and proc.poll() is None:
                kids = children(proc.pid)
                if kids:
                    c.pid = kids[0]
                    self.lab.ledger.add_pid(c.pid)
                    break
                time.sleep(0.005)
        c.readers = []
        for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert pipe is not None
            t = threading.Thread(target=c.log.pump, args=(stream, pipe), daemon=True)
            t.start()
            c.readers.append(t)
        c.started_at = now_iso()
        c.started_once = True
        c.state = {"running": {"startedAt": c.started_at}}
        c.term_sent = 0.0
        self._event("Started", f"Started container {c.name}")

    def _finish(self, c: Container) -> None:
        """The container's first process ended: kill leftovers, collect the exit, free cgroup."""
        assert c.proc is not None
        rc = c.proc.returncode
        if c.cgroup:
            for root in cgroup_roots(self.lab.systemd_cgroup):
                cgroup_kill(root / c.cgroup)
        for t in c.readers:
            t.join(timeout=2)
        if c.log is not None:
            c.log.close()
        err = ""
        if c.error_file is not None and c.error_file.exists():
            err = c.error_file.read_text()
        exit_code = 128 - rc if rc < 0 else rc
        if rc < 0:
            exit_code = 128 + (-rc)
        if err:
            reason, exit_code = "StartError", 128
        elif c.oom:
            reason, exit_code = "OOMKilled", 137
        else:
            reason = "Completed" if exit_code == 0 else "Error"
        term: Obj = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": c.started_at if not err else "1970-01-01T00:00:00Z",
            "finishedAt": now_iso(),
            "containerID": self.kubelet.runtime.container_id(c.id),
        }
        if err:
            term["message"] = err
            self._event("Failed", f"Error: {err}", "Warning")
        c.state = {"terminated": term}
        c.proc = None
        c.oom = False
        self._remove_container_cgroup(c)

    def _remove_container_cgroup(self, c: Container) -> None:
        if c.proc is not None:
            return
        if c.cgroup:
            for root in cgroup_roots(self.lab.systemd_cgroup):
                cgroup_remove(root, c.cgroup, keep_parents=[self.slice])

    def _reap(self) -> None:
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                self._finish(c)
                self._after_exit(c)

    def _restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))

    def _after_exit(self, c: Container) -> None:
        code = c.state["terminated"]["exitCode"]
        if c.kind == "sidecar":
            restart = self.phase not in ("Succeeded", "Failed") and not self._mains_done()
        elif c.kind == "init":
            restart = code != 0 and self._restart_policy() != "Never"
            if code != 0 and not restart:
                self.init_failed = True
        else:
            pol = self._restart_policy()
            restart = pol == "Always" or (pol == "OnFailure" and code != 0)
        if not restart:
            c.done = True
            return
        c.backoff = min(self.lab.backoff_max, c.backoff * 2 if c.backoff else self.lab.backoff_base)
        c.next_start = time.monotonic() + c.backoff
        c.last_state = dict(c.state)
        c.restart_count += 1
        self._event("BackOff", f"Back-off restarting failed container {c.name} in pod "
                    f"{self.name}_{self.ns}({self.uid})", "Warning")
        c.state = {"waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {int(c.backoff)}s restarting failed container={c.name} "
                       f"pod={self.name}_{self.ns}({self.uid})"}}

    def _mains_done(self) -> bool:
        return all(c.done for c in self.containers if c.kind == "main")

    def _progress(self) -> None:
        if self.kubelet.paused:
            # a test holds this node: containers stay ContainerCreating
            for c in self.containers:
                if c.proc is None and not c.done and not c.id:
                    c.state = {"waiting": {"reason": "ContainerCreating"}}
            return
        if not self._ensure_sandbox():
            return
        now = time.monotonic()
        if self.init_failed:
            self.phase = "Failed"
            self._kill_all(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
            return
        # init containers (and native sidecars) in order
        for c in self.containers:
            if c.kind == "main":
                continue
            if c.kind == "init" and c.done:
                continue
            if c.proc is None and not c.done and now >= c.next_start:
                self._start(c)
            if c.kind == "init" or (c.proc is None and not c.started_once):
                return  # wait for this init container (or the sidecar's first start)
        for c in self.containers:
            if c.kind == "main" and c.proc is None and not c.done and now >= c.next_start:
                self._start(c)
        mains = [c for c in self.containers if c.kind == "main"]
        if all(c.done for c in mains):
            failed = any(c.state.get("terminated", {}).get("exitCode", 0) != 0 for c in mains)
            self.phase = "Failed" if failed else "Succeeded"
            self._kill_all(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        elif all(c.started_once for c in mains) and \
                any(c.proc is not None or c.restart_count for c in mains):
            # a container still waiting to be created (image pull) keeps the pod Pending
            self.phase = "Running"

    def _check_deadline(self) -> None:
        limit = self.pod["spec"].get("activeDeadlineSeconds")
        if limit is None or time.monotonic() - self.start_mono < float(limit):
            return
        self.phase, self.reason, self.message = "Failed", "DeadlineExceeded", DEADLINE_MESSAGE
        self._event("DeadlineExceeded", DEADLINE_MESSAGE)
        self._kill_all(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def _signal(self, c: Container, sig: int) -> None:
        if c.proc is not None and c.proc.poll() is None and c.pid:
            with contextlib.suppress(OSError):
                os.kill(c.pid, sig)

    def _kill_group(self, group: List[Container], until: float) -> None:
        for c in group:
            c.done = True
            if c.running:
                self._event("Killing", f"Stopping container {c.name}")
            self._signal(c, signal.SIGTERM)
        while time.monotonic() < until and any(c.running for c in group):
            time.sleep(0.05)
        for c in group:
            if c.running:
                for root in cgroup_roots(self.lab.systemd_cgroup):
                    if c.cgroup:
                        cgroup_kill(root / c.cgroup)
                self._signal(c, signal.SIGKILL)
                if c.proc is not None:
                    try:
                        c.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        c.proc.kill()
                        c.proc.wait(timeout=5)
            if c.proc is not None:
                c.proc.poll()
                self._finish(c)

    def _kill_all(self, grace: float) -> None:
        """SIGTERM main containers, then sidecars (reverse order), SIGKILL after the grace."""
        grace = min(grace, self.lab.max_grace) if self.lab.stopping else grace
        until = time.monotonic() + grace
        for c in self.containers:
            c.next_start = float("inf")
            if c.proc is None:
                c.done = True
        mains = [c for c in self.containers if c.kind != "sidecar"]
        self._kill_group(mains, until)
        sidecars = [c for c in reversed(self.containers) if c.kind == "sidecar"]
        for c in sidecars:
            self._kill_group([c], max(until, time.monotonic() + min(grace, 2)))
        for c in self.containers:
            if c.proc is None and c.cgroup:
                self._remove_container_cgroup(c)

    def oom_kill(self, container: str) -> bool:
        """Emulate the OOM killer on a container (the lab never touches the memory cgroup)."""
        with self.lock:
            for c in self.containers:
                if c.name == container and c.running:
                    c.oom = True
                    for root in cgroup_roots(self.lab.systemd_cgroup):
                        cgroup_kill(root / c.cgroup)
                    return True
        return False

    # ------------------------------------------------------------ status

    def _container_status(self, c: Container) -> Obj:
        image = c.spec.get("image", "")
        if not c.id:
            image_id = ""
        elif c.image is not None:
            image_id = c.image.image_id
        else:  # a stand-in: a stable made-up digest of the reference
            image_id = f"{image.split(':')[0]}@sha256:" \
                       f"{hashlib.sha256(image.encode()).hexdigest()}"
        st: Obj = {
            "name": c.name,
            "image": image,
            "imageID": image_id,
            "ready": bool(c.running),
            "restartCount": c.restart_count,
            "started": bool(c.running),
            "state": c.state,
            "lastState": c.last_state,
        }
        if c.id:
            st["containerID"] = self.kubelet.runtime.container_id(c.id)
        return st

    def runtime_info(self) -> Obj:
        """What the lab tests (and e2e tests) check about the real processes."""
        with self.lock:
            out: Obj = {"netns": self.netns, "podIP": self.pod_ip, "slice": self.slice,
                        "node": self.kubelet.name, "sandboxPid": self.pause_pid,
                        "containers": {}}
            for c in self.containers:
                pids = cgroup_pids(Path("/sys/fs/cgroup/unified") / c.cgroup) if c.cgroup else []
                out["containers"][c.name] = {
                    "id": c.id, "pid": c.pid if c.running else 0, "cgroup": "/" + c.cgroup
                    if c.cgroup else "", "pids": pids, "running": c.running,
                    # "image": the pulled image's root filesystem; "host": a stand-in
                    "filesystem": "image" if c.image is not None else "host",
                    "imageDigest": c.image.digest if c.image is not None else "",
                    "imageRootfs": str(c.image.rootfs) if c.image is not None else "",
                }
            return out

    def log_buffer(self, container: str, previous: bool) -> Optional[LogBuffer]:
        for c in self.containers:
            if c.name == container:
                return c.previous_log if previous else c.log
        return None

    def _write_status(self) -> None:
        inits = [c for c in self.containers if c.kind != "main"]
        mains = [c for c in self.containers if c.kind == "main"]
        init_done = all(
            (c.done and c.state.get("terminated", {}).get("exitCode") == 0)
            if c.kind == "init" else c.started_once for c in inits) \
            or self.phase in ("Running", "Succeeded")
        ready = all(c.running for c in mains) and all(
            c.running for c in inits if c.kind == "sidecar")
        now = now_iso()
        old = (self.pod.get("status") or {})
        old_conds = {c["type"]: c for c in old.get("conditions") or []}

        def cond(typ: str, ok: bool, reason: str = "") -> Obj:
            prev = old_conds.get(typ)
            status = "True" if ok else "False"
            out: Obj = {"type": typ, "status": status, "lastProbeTime": None,
                        "lastTransitionTime": prev["lastTransitionTime"]
                        if prev and prev["status"] == status else now}
            if reason and not ok:
                out["reason"] = reason
            return out

        terminal = self.phase in ("Succeeded", "Failed")
        conds = [
            cond("PodReadyToStartContainers", self.sandbox_ready),
            cond("Initialized", init_done, "ContainersNotInitialized"),
            cond("Ready", ready and not terminal,
                 "PodCompleted" if terminal else "ContainersNotReady"),
            cond("ContainersReady", ready and not terminal,
                 "PodCompleted" if terminal else "ContainersNotReady"),
            cond("PodScheduled", True),
        ]
        status: Obj = {
            "phase": self.phase,
            "conditions": conds,
            "hostIP": self.kubelet.host_ip,
            "hostIPs": [{"ip": self.kubelet.host_ip}],
            "startTime": self.start_time,
            "qosClass": qos_class(self.pod),
            "containerStatuses": [self._container_status(c) for c in mains],
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in inits]
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        if status == self.last_status:
            return
        # compare without timestamps that changed only by rewriting
        self.last_status = json.loads(json.dumps(status))

        def apply(obj: Obj) -> None:
            obj["status"] = status

        self.lab.store.mutate("pods", self.ns, self.name, apply)


class Kubelet:
    """One emulated node: registers its Node object and runs the pods bound to it."""

    def __init__(self, lab: LabCore, name: str, index: int, runtime: str = "containerd") -> None:
        self.lab = lab
        self.name = name
        self.runtime = RUNTIMES[runtime]
        self.index = index
        self.host_ip = f"127.0.1.{index}"
        self.workers: Dict[str, PodWorker] = {}
        self.images = ImageManager(lab)
        self.paused = False
        self.lock = threading.Lock()
        self.next_ip = 2

    def allocate_ip(self) -> str:
        with self.lock:
            ip = f"10.244.{self.index}.{self.next_ip}"
            self.next_ip = self.next_ip + 1 if self.next_ip < 250 else 2
            return ip

    def node_object(self) -> Obj:
        uname = os.uname()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                    "offwake.lab/node-index": str(self.index),
                },
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"podCIDR": f"10.244.{self.index}.0/24",
                     "podCIDRs": [f"10.244.{self.index}.0/24"]},
            "status": {
                "conditions": [
                    {"type": t, "status": "False", "reason": f"KubeletHas{r}",
                     "message": m, "lastHeartbeatTime": now_iso(),
                     "lastTransitionTime": now_iso()}
                    for t, r, m in (
                        ("MemoryPressure", "SufficientMemory",
                         "kubelet has sufficient memory available"),
                        ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
                    )
                ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "kubelet is posting ready status",
                      "lastHeartbeatTime": now_iso(), "lastTransitionTime": now_iso()}],
                "addresses": [{"type": "InternalIP", "address": self.host_ip},
                              {"type": "Hostname", "address": self.name}],
                "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "8Gi", "pods": "110",
                             "ephemeral-storage": "50Gi"},
                "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "8Gi", "pods": "110",
                                "ephemeral-storage": "50Gi"},
                "nodeInfo": {
                    "machineID": hashlib.md5(self.name.encode()).hexdigest(),
                    "systemUUID": hashlib.md5(b"uuid" + self.name.encode()).hexdigest(),
                    "bootID": hashlib.md5(b"boot" + self.name.encode()).hexdigest(),
                    "kernelVersion": uname.release,
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "containerRuntimeVersion": self.runtime.version,
                    "kubeletVersion": "v1.32.0",
                    "kubeProxyVersion": "v1.32.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    def maybe_run(self, pod: Obj) -> None:
        """Start a worker for a pod newly bound to this node."""
        if pod["spec"].get("nodeName") != self.name:
            return
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid in self.workers or self.lab.stopping:
                return
            w = PodWorker(self, pod)
            self.workers[uid] = w
        w.start()

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def worker(self, namespace: str, name: str) -> Optional[PodWorker]:
        with self.lock:
            for w in self.workers.values():
                if w.ns == namespace and w.name == name:
                    return w
        return None

    def shutdown(self, grace: float) -> None:
        with self.lock:
            workers = list(self.workers.values())
        threads = [threading.Thread(target=w.shutdown, args=(grace,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=grace + 15)
