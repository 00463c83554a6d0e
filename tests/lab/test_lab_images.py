"""The lab's registry and image handling: pulls, pull failures, containers in image roots.

The images are built here from Debian's static busybox (lab/testimage.py) and pushed to
the lab's registry with skopeo, so nothing depends on image/build.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from lab.cluster import Lab
from lab.helpers import get_json, pod, wait_for, wait_phase
from lab.rootfs import CAPS, DEFAULT_CAPS
from lab.testimage import build_image, build_index, busybox_layer, push

pytestmark = [pytest.mark.lab, pytest.mark.root]

#: What the collector pod mounts from the host (read-only), as kubectl_offwake/k8s does.
COLLECTOR_HOST_PATHS = ["/sys/kernel/debug", "/sys/kernel/tracing", "/lib/modules", "/usr/src",
                        "/sys/fs/cgroup"]
IMAGE_CONFIG = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo cmd-from-image; exec sleep 600"],
                "Env": ["PATH=/bin", "FROM_IMAGE=yes", "OVERRIDE=image"],
                "WorkingDir": "/work"}


class Images:
    """References of the test images pushed to the lab's registry."""

    def __init__(self, lab: Lab, root: Path) -> None:
        tag = str(os.getpid())
        base = busybox_layer()
        base["etc/motd"] = b"from the image\n"
        base["image-marker"] = b"only in the image\n"
        self.busybox = f"{lab.registry}/lab-test/busybox:{tag}"
        push(build_image(root / "busybox", [base, {"work": None}], IMAGE_CONFIG),
             self.busybox)
        # an index: the node must pick linux/amd64
        self.multi = f"{lab.registry}/lab-test/multi:{tag}"
        push(build_index(root / "multi", {
            "arm64": ([base], {"Entrypoint": ["/bin/sh", "-c", "echo arch=arm64; sleep 600"]}),
            "amd64": ([base], {"Entrypoint": ["/bin/sh", "-c", "echo arch=amd64; sleep 600"]}),
        }), self.multi)
        # Docker schema2, with a second layer that whites out and makes a directory opaque
        self.docker = f"{lab.registry}/lab-test/docker:{tag}"
        lower = busybox_layer()
        lower["etc/removed"] = b"gone\n"
        lower["var/old"] = b"old\n"
        # the opaque marker after this layer's own var/new: it hides only what is below
        upper: Dict[str, Any] = {"etc/removed": ("whiteout",), "var/new": b"new\n",
                                 "var": ("opaque",)}
        push(build_image(root / "docker", [lower, upper],
                         {"Entrypoint": ["/bin/sh", "-c"],
                          "Cmd": ["ls /etc/removed; ls /var; exec sleep 600"]}),
             self.docker, fmt="v2s2")
        self.bare = f"{lab.registry}/lab-test/bare:{tag}"  # no Entrypoint, no Cmd
        push(build_image(root / "bare", [base], {}), self.bare)
        self.moving = f"{lab.registry}/lab-test/moving:{tag}"
        self.root = root
        self.base = base
        self.push_moving("one")

    def push_moving(self, text: str) -> None:
        """Push a different image under the same tag (what `Always` must notice)."""
        layer = dict(self.base)
        layer["version"] = text.encode()
        push(build_image(self.root / f"moving-{text}", [layer],
                         {"Entrypoint": ["/bin/sh", "-c", "cat /version; echo; sleep 600"]}),
             self.moving)


@pytest.fixture(scope="module")
def images(lab_cluster: Lab, tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(lab_cluster, tmp_path_factory.mktemp("images"))


@pytest.fixture
def cleanup(lab: Lab) -> Iterator[List[str]]:
    """Names of pods in `app` to delete after the test."""
    names: List[str] = []
    yield names
    for name in names:
        lab.kubectl("delete", "pod", "-n", "app", name, "--ignore-not-found", "--wait=true")


def _pod(name: str, containers: str, spec: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: app}}
spec:
  terminationGracePeriodSeconds: 1
{spec}
  containers:
{containers}
"""


def _create(lab: Lab, text: str, cleanup: List[str]) -> None:
    res = lab.kubectl("create", "-f", "-", input=text)
    cleanup.extend(re.findall(r"^pod/(\S+) created$", res.stdout, re.M))


def _log(lab: Lab, name: str, container: str, lines: int) -> List[str]:
    def enough() -> Optional[List[str]]:
        out = lab.kubectl("logs", "-n", "app", name, "-c", container, check=False).stdout
        return out.splitlines() if out.count("\n") >= lines else None
    return wait_for(enough, 20, 0.2, f"{lines} log lines of {name}/{container}")


def _manifest_digest(lab: Lab, repo_tag: str) -> str:
    repo, tag = repo_tag.split("/", 1)[1].rsplit(":", 1)
    req = urllib.request.Request(
        f"http://{lab.registry}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.index.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def _events(lab: Lab, name: str) -> str:
    return lab.kubectl("get", "events", "-n", "app", "--field-selector",
                       f"involvedObject.name={name}", "-o", "json").stdout


def _cap_mask(caps: List[str]) -> str:
    return f"{sum(1 << CAPS.index(c) for c in caps):016x}"


def test_pulled_image_runs_in_its_own_root_filesystem(lab: Lab, images: Images,
                                                      cleanup: List[str]) -> None:
    """Image entrypoint/cmd/env/workdir, the image's files only; a stand-in beside it."""
    script = ("cat /image-marker; test -e /usr/bin/python3 || echo no-host-python; pwd; "
              "echo $FROM_IMAGE $OVERRIDE $POD_ONLY; hostname; grep -c . /etc/hosts; "
              "exec sleep 600")
    containers = f"""
  - name: image
    image: {images.busybox}
    command: ["/bin/sh", "-c", {json.dumps(script)}]
    env: [{{name: OVERRIDE, value: pod}}, {{name: POD_ONLY, value: "1"}}]
  - name: stand-in
    image: busybox:1.36
    command: ["sh", "-c", "test -e /usr/bin/python3 && echo host-python; exec sleep 600"]
"""
    _create(lab, _pod("rootfs", containers), cleanup)
    p = wait_phase(lab, "app", "rootfs", ["Running"])
    lines = _log(lab, "rootfs", "image", 6)
    assert lines[:5] == ["only in the image", "no-host-python", "/work", "yes pod 1", "rootfs"]
    assert int(lines[5]) >= 2  # the kubelet-managed hosts file
    assert _log(lab, "rootfs", "stand-in", 1) == ["host-python"]

    statuses = {c["name"]: c for c in p["status"]["containerStatuses"]}
    digest = _manifest_digest(lab, images.busybox)
    repo = images.busybox.rsplit(":", 1)[0]
    assert statuses["image"]["imageID"] == f"{repo}@{digest}"
    info = lab.pod_runtime("app", "rootfs")["containers"]
    assert info["image"]["filesystem"] == "image" and info["image"]["imageDigest"] == digest
    assert info["stand-in"]["filesystem"] == "host"
    pid = info["image"]["pid"]
    # the container's root is the overlay over the unpacked image, not the host's disk
    assert os.stat(f"/proc/{pid}/root/").st_dev != os.stat("/").st_dev
    root_line = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()[0].split()
    assert root_line[4] == "/" and "overlay" in root_line
    assert f"lowerdir={info['image']['imageRootfs']}," in root_line[-1]
    events = _events(lab, "rootfs")
    assert f'Pulling image \\"{images.busybox}\\"' in events
    assert re.search(rf'Successfully pulled image \\"{re.escape(images.busybox)}\\" in '
                     r"[0-9.]+m?s \([0-9.]+m?s including waiting\)\. Image size: \d+ bytes\.",
                     events)
    assert 'Container image \\"busybox:1.36\\" already present on machine' in events


def test_entrypoint_cmd_and_working_dir_rules(lab: Lab, images: Images,
                                              cleanup: List[str]) -> None:
    """command replaces Entrypoint and drops Cmd; args replace Cmd; workingDir overrides."""
    containers = f"""
  - {{name: image-defaults, image: {images.busybox}}}
  - name: args-only
    image: {images.busybox}
    args: ["echo args-only; exec sleep 600"]
  - name: command-only
    image: {images.busybox}
    command: ["/bin/sh", "-c", "echo [$0]; exec sleep 600"]
  - name: workdir
    image: {images.busybox}
    workingDir: /elsewhere/deep
    args: ["pwd; exec sleep 600"]
  - {{name: index, image: {images.multi}}}
  - {{name: docker-schema2, image: {images.docker}}}
"""
    _create(lab, _pod("rules", containers), cleanup)
    wait_phase(lab, "app", "rules", ["Running"])
    assert _log(lab, "rules", "image-defaults", 1) == ["cmd-from-image"]
    assert _log(lab, "rules", "args-only", 1) == ["args-only"]
    assert _log(lab, "rules", "command-only", 1) == ["[/bin/sh]"]  # no Cmd appended
    assert _log(lab, "rules", "workdir", 1) == ["/elsewhere/deep"]
    assert _log(lab, "rules", "index", 1) == ["arch=amd64"]
    # the upper layer whited out /etc/removed and made /var opaque (only "new" is left)
    assert sorted(_log(lab, "rules", "docker-schema2", 2)) == [
        "ls: /etc/removed: No such file or directory", "new"]


def test_read_only_root_volumes_and_writable_layer(lab: Lab, images: Images,
                                                   cleanup: List[str], tmp_path: Path) -> None:
    host_dir = tmp_path / "shared"
    (host_dir / "sub").mkdir(parents=True)
    (host_dir / "sub" / "file").write_text("from the host\n")
    lab.kubectl("create", "configmap", "-n", "app", "img-cm", "--from-literal=key=cm-value")
    lab.kubectl("create", "secret", "generic", "-n", "app", "img-sec", "--from-literal=key=s3")
    mountpoint = f"/lab-image-only-{os.getpid()}"
    ro_script = (
        "touch /newfile 2>&1 | sed 's/.*: //'; touch /data/x && echo data-writable; "
        "cat /cfg/key; echo; cat /sec/key; echo; cat /host/file; "
        "touch /host/new 2>&1 | sed 's/.*: //'; touch /rw/made-inside && echo rw-ok; "
        f"ls -d {mountpoint}; exec sleep 600")
    containers = f"""
  - name: ro
    image: {images.busybox}
    command: ["/bin/sh", "-c", {json.dumps(ro_script)}]
    securityContext: {{readOnlyRootFilesystem: true}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: cfg, mountPath: /cfg, readOnly: true}}
    - {{name: sec, mountPath: /sec}}
    - {{name: host, mountPath: /host, subPath: sub, readOnly: true}}
    - {{name: host, mountPath: /rw}}
    - {{name: data, mountPath: {mountpoint}}}
  - name: writable
    image: {images.busybox}
    command: ["/bin/sh", "-c", "echo layer > /newfile && cat /newfile; exec sleep 600"]
"""
    volumes = f"""
  volumes:
  - {{name: data, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: img-cm}}}}
  - {{name: sec, secret: {{secretName: img-sec}}}}
  - {{name: host, hostPath: {{path: {host_dir}}}}}
"""
    try:
        _create(lab, _pod("volumes", containers) + volumes, cleanup)
        wait_phase(lab, "app", "volumes", ["Running"])
        assert _log(lab, "volumes", "ro", 8) == [
            "Read-only file system", "data-writable", "cm-value", "s3", "from the host",
            "Read-only file system", "rw-ok", mountpoint]
        assert (host_dir / "made-inside").exists()  # a writable hostPath is the host's dir
        assert not Path(mountpoint).exists()  # mountpoints are made inside the image root
        assert _log(lab, "volumes", "writable", 1) == ["layer"]
        info = lab.pod_runtime("app", "volumes")["containers"]["writable"]
        assert not (Path(info["imageRootfs"]) / "newfile").exists()  # the image is unchanged
    finally:
        lab.kubectl("delete", "configmap", "-n", "app", "img-cm", "--ignore-not-found")
        lab.kubectl("delete", "secret", "-n", "app", "img-sec", "--ignore-not-found")


def test_privileged_host_pid_collector_shape(lab: Lab, images: Images,
                                             cleanup: List[str]) -> None:
    """The collector's pod shape: privileged, hostPID, read-only root, host mounts."""
    with open("/proc/self/status") as f:
        host_bounding = next(x.split()[1] for x in f if x.startswith("CapBnd:"))
    script = (
        "grep CapEff /proc/self/status | cut -f2; ls /proc | grep -c '^[0-9]'; "
        "test -r /sys/kernel/btf/vmlinux && echo btf; "
        "(test -d /sys/kernel/tracing/events || mount -t tracefs tracefs /sys/kernel/tracing)"
        " && test -d /sys/kernel/tracing/events/sched && echo tracefs; "
        "test -d /sys/fs/cgroup/unified/kubepods.slice && echo cgroup; "
        "cat /proc/1/cgroup | grep -c .; test -b /dev/$(ls /sys/block | head -1) && echo dev; "
        "touch /x 2>&1 | sed 's/.*: //'; exec sleep 600")
    mounts = "".join(f"    - {{name: h{i}, mountPath: {p}, readOnly: true}}\n"
                     for i, p in enumerate(COLLECTOR_HOST_PATHS))
    volumes = "".join(f"  - {{name: h{i}, hostPath: {{path: {p}}}}}\n"
                      for i, p in enumerate(COLLECTOR_HOST_PATHS))
    containers = f"""
  - name: collector
    image: {images.busybox}
    command: ["/bin/sh", "-c", {json.dumps(script)}]
    securityContext: {{privileged: true, readOnlyRootFilesystem: true}}
    volumeMounts:
{mounts}    - {{name: tmp, mountPath: /tmp}}
  volumes:
{volumes}  - {{name: tmp, emptyDir: {{}}}}
"""
    probe = ("grep CapEff /proc/self/status | cut -f2; ls /proc | grep -c '^[0-9]'; "
             "ls /dev | grep -c .; exec sleep 600")
    nobody = "id -u; grep CapEff /proc/self/status | cut -f2; echo $HOME; exec sleep 600"
    default = _pod("unprivileged", f"""
  - name: c
    image: {images.busybox}
    command: ["/bin/sh", "-c", {json.dumps(probe)}]
  - name: nobody
    image: {images.busybox}
    command: ["/bin/sh", "-c", {json.dumps(nobody)}]
    securityContext: {{runAsUser: 65534}}
""")
    _create(lab, _pod("collector", containers, "  hostPID: true"), cleanup)
    _create(lab, default, cleanup)
    wait_phase(lab, "app", "collector", ["Running"])
    lines = _log(lab, "collector", "collector", 8)
    assert lines[0] == host_bounding  # every capability
    assert int(lines[1]) > 20  # the host's processes
    assert lines[2:5] == ["btf", "tracefs", "cgroup"]
    assert int(lines[5]) >= 2 and lines[6] == "dev" and lines[7] == "Read-only file system"
    pid = lab.pod_runtime("app", "collector")["containers"]["collector"]["pid"]
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino

    wait_phase(lab, "app", "unprivileged", ["Running"])
    caps, procs, devs = _log(lab, "unprivileged", "c", 3)
    assert caps == _cap_mask(DEFAULT_CAPS)  # containerd's default set
    assert int(procs) <= 3 and int(devs) < 20
    # a non-root user keeps no capability; HOME comes from the image's /etc/passwd
    assert _log(lab, "unprivileged", "nobody", 3) == ["65534", "0" * 16, "/"]


def test_missing_tag_err_image_pull_then_back_off(lab: Lab, images: Images,
                                                  cleanup: List[str]) -> None:
    missing = images.busybox.rsplit(":", 1)[0] + ":no-such-tag"
    containers = f"""
  - name: app
    image: busybox:1.36
    command: ["sleep", "600"]
  - name: sidecar
    image: {missing}
"""
    _create(lab, _pod("missing", containers), cleanup)
    error = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{missing}": '
             f'failed to resolve reference "{missing}": {missing}: not found')
    seen = set()

    def back_off() -> Any:
        st = {c["name"]: c for c in (pod(lab, "app", "missing") or {}).get(
            "status", {}).get("containerStatuses") or []}
        waiting = st.get("sidecar", {}).get("state", {}).get("waiting") or {}
        seen.add(waiting.get("reason"))
        if waiting.get("reason") == "ErrImagePull":
            assert waiting["message"] == error
        return waiting if waiting.get("reason") == "ImagePullBackOff" else None
    waiting = wait_for(back_off, 20, 0.05, "ImagePullBackOff")
    assert waiting["message"] == f'Back-off pulling image "{missing}": ErrImagePull: {error}'
    p = pod(lab, "app", "missing") or {}
    assert p["status"]["phase"] == "Pending"  # the app runs, the sidecar never started
    line = lab.kubectl("get", "pod", "-n", "app", "missing").stdout.splitlines()[1]
    # (between back-offs the pull is retried: the status may read ErrImagePull again)
    assert "1/2" in line and re.search(r"ImagePullBackOff|ErrImagePull", line), line
    assert "Running" not in line
    events = json.loads(_events(lab, "missing"))["items"]
    messages = {(e["reason"], e["message"]) for e in events}
    assert ("Failed", f'Failed to pull image "{missing}": {error}') in messages
    assert ("Failed", "Error: ErrImagePull") in messages
    assert ("BackOff", f'Back-off pulling image "{missing}"') in messages
    assert ("Failed", "Error: ImagePullBackOff") in messages
    res = lab.kubectl("logs", "-n", "app", "missing", "-c", "sidecar", check=False)
    assert "is waiting to start: trying and failing to pull image" in res.stderr


def test_image_pull_policies(lab: Lab, images: Images, cleanup: List[str]) -> None:
    """IfNotPresent keeps what the node has, Always re-resolves the tag, Never never pulls."""
    def one(name: str, image: str, policy: str, node: str) -> str:
        return _pod(name, f"""
  - name: c
    image: {image}
    imagePullPolicy: {policy}
""", f"  nodeName: {node}")

    _create(lab, one("first", images.moving, "IfNotPresent", "lab-node-1"), cleanup)
    wait_phase(lab, "app", "first", ["Running"])
    assert _log(lab, "first", "c", 1) == ["one"]
    images.push_moving("two")
    _create(lab, one("cached", images.moving, "IfNotPresent", "lab-node-1"), cleanup)
    _create(lab, one("always", images.moving, "Always", "lab-node-1"), cleanup)
    _create(lab, one("never", images.moving, "Never", "lab-node-2"), cleanup)
    wait_phase(lab, "app", "cached", ["Running"])
    wait_phase(lab, "app", "always", ["Running"])
    assert _log(lab, "cached", "c", 1) == ["one"]
    assert _log(lab, "always", "c", 1) == ["two"]
    assert 'already present on machine' in _events(lab, "cached")

    def never() -> Any:
        st = (pod(lab, "app", "never") or {}).get("status", {}).get("containerStatuses") or []
        waiting = st[0]["state"].get("waiting", {}) if st else {}
        return waiting if waiting.get("reason") == "ErrImageNeverPull" else None
    waiting = wait_for(never, 15, 0.2, "ErrImageNeverPull")
    assert waiting["message"] == \
        f'Container image "{images.moving}" is not present with pull policy of Never'
    assert get_json(lab, "pod", "-n", "app", "never")["status"]["phase"] == "Pending"


def test_image_containers_leave_nothing_behind(lab: Lab, images: Images,
                                               cleanup: List[str]) -> None:
    _create(lab, _pod("gone", f"  - {{name: c, image: {images.busybox}}}"), cleanup)
    wait_phase(lab, "app", "gone", ["Running"])
    info = lab.pod_runtime("app", "gone")
    pod_dirs = list((lab.state_dir / "pods").glob("app_gone_*"))
    assert len(pod_dirs) == 1 and (pod_dirs[0] / "containers" / "c-0" / "upper").is_dir()
    lab.kubectl("delete", "pod", "-n", "app", "gone", "--wait=true")
    assert not Path(f"/proc/{info['containers']['c']['pid']}").exists()
    assert not pod_dirs[0].exists()
    # no mount of any namespace still refers to the pod's overlay
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            assert str(pod_dirs[0]) not in mountinfo.read_text()
        except OSError:
            continue


def test_image_without_a_command_cannot_be_created(lab: Lab, images: Images,
                                                  cleanup: List[str]) -> None:
    _create(lab, _pod("bare", f"  - {{name: c, image: {images.bare}}}"), cleanup)

    def create_error() -> Any:
        st = (pod(lab, "app", "bare") or {}).get("status", {}).get("containerStatuses") or []
        waiting = st[0]["state"].get("waiting", {}) if st else {}
        return waiting if waiting.get("reason") == "CreateContainerError" else None
    waiting = wait_for(create_error, 15, 0.2, "CreateContainerError")
    assert waiting["message"] == "failed to generate container spec: no command specified"
    assert get_json(lab, "pod", "-n", "app", "bare")["status"]["phase"] == "Pending"
    time.sleep(1)  # ten more kubelet ticks
    failed = [e for e in json.loads(_events(lab, "bare"))["items"]
              if e["message"] == "Error: failed to generate container spec: no command specified"]
    assert [e["count"] for e in failed] == [1]  # recorded once, not on every kubelet tick
