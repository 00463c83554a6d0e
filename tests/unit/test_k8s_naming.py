"""Naming wakers from pod data: ns/pod/container, host: COMM, kernel: COMM."""

from __future__ import annotations

from kubectl_offwake.analysis.model import ProcessInfo
from kubectl_offwake.k8s.naming import identities

ENVOY_CID = "e" * 64
DNS_CID = "d" * 64
OLD_CID = "0" * 64


def _pods():
    return [
        {"metadata": {"namespace": "app", "name": "web-1",
                      "uid": "11111111-2222-3333-4444-555555555555"},
         "status": {"containerStatuses": [
             {"name": "istio-proxy", "containerID": f"containerd://{ENVOY_CID}"}]}},
        {"metadata": {"namespace": "kube-system", "name": "coredns-5d78c", "uid": "aaaa-bbbb"},
         "status": {"containerStatuses": [
             {"name": "coredns", "containerID": f"cri-o://{DNS_CID}",
              "lastState": {"terminated": {"containerID": f"cri-o://{OLD_CID}"}}}]}},
    ]


def test_every_kind_of_process_gets_its_name():
    processes = [
        ProcessInfo(10, "envoy", container_id=ENVOY_CID, runtime="containerd"),
        ProcessInfo(20, "coredns", container_id=f"cri-o://{DNS_CID}"),
        ProcessInfo(21, "coredns", container_id=OLD_CID),
        ProcessInfo(30, "pause", pod_uid="11111111_2222_3333_4444_555555555555"),
        ProcessInfo(40, "kubelet"),
        ProcessInfo(50, "ksoftirqd/1", kernel_thread=True),
        ProcessInfo(60, "runc", container_id="f" * 64),
    ]
    named = {r["pid"]: r for r in identities(processes, _pods(), "node-1")}
    assert named[10] == {"type": "identity", "pid": 10, "node": "node-1", "pod": "app/web-1",
                         "container": "istio-proxy", "label": "app/web-1/istio-proxy"}
    assert named[20]["label"] == "kube-system/coredns-5d78c/coredns"
    assert named[21]["container"] == "coredns"  # a restarted container's old id
    assert named[30]["pod"] == "app/web-1" and "container" not in named[30]
    assert named[40]["label"] == "host: kubelet" and "pod" not in named[40]
    assert named[50]["label"] == "kernel: ksoftirqd/1"
    assert named[60]["label"] == "host: runc"  # a container of no pod we know


def test_a_process_without_a_comm_is_named_by_a_placeholder():
    (named,) = identities([ProcessInfo(1, "")], [], None)
    assert named == {"type": "identity", "pid": 1, "label": "host: ?"}
