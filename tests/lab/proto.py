"""Decode the protobuf request bodies kubectl sends (its typed clients use protobuf).

`kubectl create namespace|configmap|secret generic`, `kubectl run` and `kubectl auth can-i`
POST their objects as `application/vnd.kubernetes.protobuf`: the `k8s\\0` magic, a
runtime.Unknown envelope (typeMeta = 1, raw = 2), then the object's message. This module
turns that into the JSON object it stands for, from the field tables below (field numbers
from k8s.io/api core/v1 and authorization/v1 `generated.proto`, k8s.io/apimachinery
meta/v1). A field the tables do not know is an error naming it, never silently dropped.
Replies can be JSON (client-go decodes by the response's Content-Type).
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any, Dict, List, Tuple

MAGIC = b"k8s\x00"

# Type codes: "s" string, "i" integer, "B" bool, "b" bytes (base64 in JSON); a leading "?"
# marks a Go pointer field (its zero value is meaningful, so it is kept; other zero scalars
# are what gogo-protobuf writes for unset fields and are dropped, as JSON's omitempty
# does); a trailing "*" a repeated field; "{X" a map<string, X>; "-" a field the API
# server ignores on create (status); any other name is a message below, and a json name
# of "" embeds that message's fields inline (Go's embedded structs).
Fields = Dict[int, Tuple[str, str]]

MESSAGES: Dict[str, Fields] = {
    # k8s.io/apimachinery/pkg/runtime (inside the runtime.Unknown envelope)
    "TypeMeta": {1: ("apiVersion", "s"), 2: ("kind", "s")},
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"),
                   4: ("selfLink", "s"), 5: ("uid", "s"), 6: ("resourceVersion", "s"),
                   7: ("generation", "i"), 8: ("creationTimestamp", "Time"),
                   9: ("deletionTimestamp", "Time"), 10: ("deletionGracePeriodSeconds", "?i"),
                   11: ("labels", "{s"), 12: ("annotations", "{s"),
                   13: ("ownerReferences", "OwnerReference*"), 14: ("finalizers", "s*"),
                   17: ("managedFields", "-")},
    "OwnerReference": {1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"),
                       5: ("apiVersion", "s"), 6: ("controller", "?B"),
                       7: ("blockOwnerDeletion", "?B")},
    # k8s.io/api/core/v1
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"),
                  3: ("status", "-")},
    "NamespaceSpec": {1: ("finalizers", "s*")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "{s"), 3: ("binaryData", "{b"),
                  4: ("immutable", "?B")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "{b"), 3: ("type", "s"),
               4: ("stringData", "{s"), 5: ("immutable", "?B")},
    "Pod": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec"), 3: ("status", "-")},
    "PodSpec": {
        1: ("volumes", "Volume*"), 2: ("containers", "Container*"), 3: ("restartPolicy", "s"),
        4: ("terminationGracePeriodSeconds", "?i"), 5: ("activeDeadlineSeconds", "?i"),
        6: ("dnsPolicy", "s"), 7: ("nodeSelector", "{s"), 8: ("serviceAccountName", "s"),
        9: ("serviceAccount", "s"), 10: ("nodeName", "s"), 11: ("hostNetwork", "B"),
        12: ("hostPID", "B"), 13: ("hostIPC", "B"), 14: ("securityContext", "PodSecurityContext"),
        15: ("imagePullSecrets", "LocalObjectReference*"), 16: ("hostname", "s"),
        17: ("subdomain", "s"), 19: ("schedulerName", "s"), 20: ("initContainers", "Container*"),
        21: ("automountServiceAccountToken", "?B"), 22: ("tolerations", "Toleration*"),
        23: ("hostAliases", "HostAlias*"), 24: ("priorityClassName", "s"), 25: ("priority", "?i"),
        26: ("dnsConfig", "PodDNSConfig"), 27: ("shareProcessNamespace", "?B"),
        29: ("runtimeClassName", "?s"), 30: ("enableServiceLinks", "?B"),
        31: ("preemptionPolicy", "?s"), 35: ("setHostnameAsFQDN", "?B"), 36: ("os", "PodOS"),
        37: ("hostUsers", "?B")},
    "Container": {
        1: ("name", "s"), 2: ("image", "s"), 3: ("command", "s*"), 4: ("args", "s*"),
        5: ("workingDir", "s"), 6: ("ports", "ContainerPort*"), 7: ("env", "EnvVar*"),
        8: ("resources", "ResourceRequirements"), 9: ("volumeMounts", "VolumeMount*"),
        13: ("terminationMessagePath", "s"), 14: ("imagePullPolicy", "s"),
        15: ("securityContext", "SecurityContext"), 16: ("stdin", "B"), 17: ("stdinOnce", "B"),
        18: ("tty", "B"), 19: ("envFrom", "EnvFromSource*"),
        20: ("terminationMessagePolicy", "s"), 23: ("resizePolicy", "ContainerResizePolicy*"),
        24: ("restartPolicy", "?s")},
    "ContainerPort": {1: ("name", "s"), 2: ("hostPort", "i"), 3: ("containerPort", "i"),
                      4: ("protocol", "s"), 5: ("hostIP", "s")},
    "ContainerResizePolicy": {1: ("resourceName", "s"), 2: ("restartPolicy", "s")},
    "EnvVar": {1: ("name", "s"), 2: ("value", "s"), 3: ("valueFrom", "EnvVarSource")},
    "EnvVarSource": {1: ("fieldRef", "ObjectFieldSelector"),
                     2: ("resourceFieldRef", "ResourceFieldSelector"),
                     3: ("configMapKeyRef", "ConfigMapKeySelector"),
                     4: ("secretKeyRef", "SecretKeySelector")},
    "ObjectFieldSelector": {1: ("apiVersion", "s"), 2: ("fieldPath", "s")},
    "ResourceFieldSelector": {1: ("containerName", "s"), 2: ("resource", "s"),
                              3: ("divisor", "Quantity")},
    "ConfigMapKeySelector": {1: ("", "LocalObjectReference"), 2: ("key", "s"),
                             3: ("optional", "?B")},
    "SecretKeySelector": {1: ("", "LocalObjectReference"), 2: ("key", "s"),
                          3: ("optional", "?B")},
    "EnvFromSource": {1: ("prefix", "s"), 2: ("configMapRef", "ConfigMapEnvSource"),
                      3: ("secretRef", "SecretEnvSource")},
    "ConfigMapEnvSource": {1: ("", "LocalObjectReference"), 2: ("optional", "?B")},
    "SecretEnvSource": {1: ("", "LocalObjectReference"), 2: ("optional", "?B")},
    "LocalObjectReference": {1: ("name", "s")},
    "ResourceRequirements": {1: ("limits", "{Quantity"), 2: ("requests", "{Quantity"),
                             3: ("claims", "ResourceClaim*")},
    "ResourceClaim": {1: ("name", "s"), 2: ("request", "s")},
    "VolumeMount": {1: ("name", "s"), 2: ("readOnly", "B"), 3: ("mountPath", "s"),
                    4: ("subPath", "s"), 5: ("mountPropagation", "?s"), 6: ("subPathExpr", "s"),
                    7: ("recursiveReadOnly", "?s")},
    "SecurityContext": {1: ("capabilities", "Capabilities"), 2: ("privileged", "?B"),
                        3: ("seLinuxOptions", "SELinuxOptions"), 4: ("runAsUser", "?i"),
                        5: ("runAsNonRoot", "?B"), 6: ("readOnlyRootFilesystem", "?B"),
                        7: ("allowPrivilegeEscalation", "?B"), 8: ("runAsGroup", "?i"),
                        9: ("procMount", "?s"), 11: ("seccompProfile", "SeccompProfile")},
    "Capabilities": {1: ("add", "s*"), 2: ("drop", "s*")},
    "PodSecurityContext": {1: ("seLinuxOptions", "SELinuxOptions"), 2: ("runAsUser", "?i"),
                           3: ("runAsNonRoot", "?B"), 4: ("supplementalGroups", "i*"),
                           5: ("fsGroup", "?i"), 6: ("runAsGroup", "?i"),
                           7: ("sysctls", "Sysctl*"), 9: ("fsGroupChangePolicy", "?s"),
                           10: ("seccompProfile", "SeccompProfile")},
    "SELinuxOptions": {1: ("user", "s"), 2: ("role", "s"), 3: ("type", "s"), 4: ("level", "s")},
    "SeccompProfile": {1: ("type", "s"), 2: ("localhostProfile", "?s")},
    "Sysctl": {1: ("name", "s"), 2: ("value", "s")},
    "Toleration": {1: ("key", "s"), 2: ("operator", "s"), 3: ("value", "s"), 4: ("effect", "s"),
                   5: ("tolerationSeconds", "?i")},
    "HostAlias": {1: ("ip", "s"), 2: ("hostnames", "s*")},
    "PodDNSConfig": {1: ("nameservers", "s*"), 2: ("searches", "s*"),
                     3: ("options", "PodDNSConfigOption*")},
    "PodDNSConfigOption": {1: ("name", "s"), 2: ("value", "?s")},
    "PodOS": {1: ("name", "s")},
    "Volume": {1: ("name", "s"), 2: ("", "VolumeSource")},
    "VolumeSource": {1: ("hostPath", "HostPathVolumeSource"),
                     2: ("emptyDir", "EmptyDirVolumeSource"), 6: ("secret", "SecretVolumeSource"),
                     19: ("configMap", "ConfigMapVolumeSource")},
    "HostPathVolumeSource": {1: ("path", "s"), 2: ("type", "?s")},
    "EmptyDirVolumeSource": {1: ("medium", "s"), 2: ("sizeLimit", "Quantity")},
    "ConfigMapVolumeSource": {1: ("", "LocalObjectReference"), 2: ("items", "KeyToPath*"),
                              3: ("defaultMode", "?i"), 4: ("optional", "?B")},
    "SecretVolumeSource": {1: ("secretName", "s"), 2: ("items", "KeyToPath*"),
                           3: ("defaultMode", "?i"), 4: ("optional", "?B")},
    "KeyToPath": {1: ("key", "s"), 2: ("path", "s"), 3: ("mode", "?i")},
    # k8s.io/api/authorization/v1
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"),
                                2: ("spec", "SelfSubjectAccessReviewSpec"), 3: ("status", "-")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "SubjectAccessReview": {1: ("metadata", "ObjectMeta"),
                            2: ("spec", "SubjectAccessReviewSpec"), 3: ("status", "-")},
    "SubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                2: ("nonResourceAttributes", "NonResourceAttributes"),
                                3: ("user", "s"), 4: ("groups", "s*"), 5: ("extra", "-"),
                                6: ("uid", "s")},
    "ResourceAttributes": {1: ("namespace", "s"), 2: ("verb", "s"), 3: ("group", "s"),
                           4: ("version", "s"), 5: ("resource", "s"), 6: ("subresource", "s"),
                           7: ("name", "s"), 8: ("fieldSelector", "-"),
                           9: ("labelSelector", "-")},
    "NonResourceAttributes": {1: ("path", "s"), 2: ("verb", "s")},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta"),
                               2: ("spec", "SelfSubjectRulesReviewSpec"), 3: ("status", "-")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "s")},
}

#: Top-level kinds kubectl sends as protobuf, with the message that carries each.
KINDS = ("Namespace", "ConfigMap", "Secret", "Pod", "SelfSubjectAccessReview",
         "SubjectAccessReview", "SelfSubjectRulesReview")


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes) -> List[Tuple[int, Any]]:
    """(field number, value) pairs; length-delimited values stay bytes."""
    out: List[Tuple[int, Any]] = []
    i = 0
    val: Any
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated protobuf message")
            val, i = buf[i:i + n], i + n
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        out.append((num, val))
    return out


def _signed(v: int) -> int:
    """int32/int64 varints carry negative numbers as 64-bit two's complement."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(code: str, val: Any) -> Any:
    if code == "s":
        return bytes(val).decode()
    if code == "b":
        return base64.b64encode(bytes(val)).decode()
    if code == "i":
        return _signed(int(val))
    if code == "B":
        return bool(val)
    raise ValueError(f"unknown scalar code {code!r}")


def _time(buf: bytes) -> Any:
    parts = dict(fields(buf))
    if not parts:
        return None  # a zero metav1.Time marshals as an empty message
    stamp = _dt.datetime.fromtimestamp(_signed(int(parts.get(1, 0))), _dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(code: str, val: Any, where: str) -> Any:
    if code in ("s", "b", "i", "B"):
        return _scalar(code, val)
    if code == "Quantity":
        return _scalar("s", dict(fields(val)).get(1, b""))
    if code == "Time":
        return _time(val)
    return message(val, code, where)


def _is_zero(v: Any) -> bool:
    return v in ("", 0, False, None)


def message(buf: bytes, name: str, where: str = "") -> Dict[str, Any]:
    """One protobuf message as its JSON object (see the type codes above)."""
    table = MESSAGES.get(name)
    if table is None:
        raise ValueError(f"the lab cannot decode protobuf {name} ({where or name}); send JSON")
    out: Dict[str, Any] = {}
    for num, val in fields(buf):
        if num not in table:
            raise ValueError(f"the lab cannot decode protobuf field {num} of {name} "
                             f"({where or name}); send JSON")
        jname, code = table[num]
        path = f"{where}.{jname}" if where else jname
        if code == "-":
            continue
        repeated = code.endswith("*")
        pointer = code.startswith("?")
        base = code.strip("?*")
        if base.startswith("{"):
            entry = dict(fields(val))
            key = _scalar("s", entry.get(1, b""))
            out.setdefault(jname, {})[key] = _value(base[1:], entry.get(2, b""), path)
            continue
        if repeated and base == "i" and isinstance(val, bytes):  # packed
            packed, i = [], 0
            while i < len(val):
                v, i = _varint(val, i)
                packed.append(_signed(v))
            out.setdefault(jname, []).extend(packed)
            continue
        value = _value(base, val, path)
        if jname == "":
            out.update(value)
        elif repeated:
            out.setdefault(jname, []).append(value)
        elif value is None or (_is_zero(value) and not pointer):
            continue
        else:
            out[jname] = value
    return out


def decode(body: bytes) -> Dict[str, Any]:
    """A k8s protobuf body as the JSON object it stands for (the kinds in KINDS)."""
    if not body.startswith(MAGIC):
        raise ValueError("not a kubernetes protobuf body")
    env = dict(fields(body[len(MAGIC):]))
    type_meta = message(env.get(1, b""), "TypeMeta")
    kind = type_meta.get("kind", "")
    if kind not in KINDS:
        raise ValueError(f"the lab cannot decode protobuf {kind or 'objects without a kind'}; "
                         "send JSON")
    obj = {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind}
    obj.update(message(env.get(2, b""), kind))
    obj.setdefault("metadata", {})
    return obj
