"""Decode the few protobuf request bodies kubectl sends (its typed clients use protobuf).

`kubectl auth can-i` POSTs SelfSubjectAccessReview / SelfSubjectRulesReview as
`application/vnd.kubernetes.protobuf`: the `k8s\\0` magic, a runtime.Unknown envelope, then
the message. Replies can be JSON (client-go decodes by the response's Content-Type).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

MAGIC = b"k8s\x00"


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
            val, i = buf[i:i + n], i + n
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        out.append((num, val))
    return out


def _strings(buf: bytes, names: Dict[int, str]) -> Dict[str, str]:
    return {names[n]: v.decode() for n, v in fields(buf) if n in names and isinstance(v, bytes)}


RESOURCE_ATTRS = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource",
                  6: "subresource", 7: "name"}


def decode(body: bytes) -> Dict[str, Any]:
    """A k8s protobuf body as the JSON object it stands for (the kinds the lab accepts)."""
    if not body.startswith(MAGIC):
        raise ValueError("not a kubernetes protobuf body")
    env = dict(fields(body[len(MAGIC):]))
    tm = _strings(env.get(1, b""), {1: "apiVersion", 2: "kind"})
    raw = env.get(2, b"")
    obj: Dict[str, Any] = {"apiVersion": tm.get("apiVersion", ""), "kind": tm.get("kind", ""),
                           "metadata": {}}
    top = dict(fields(raw))
    spec_raw = top.get(2, b"")
    if tm.get("kind") in ("SelfSubjectAccessReview", "SubjectAccessReview"):
        spec: Dict[str, Any] = {}
        for num, val in fields(spec_raw):
            if num == 1:
                spec["resourceAttributes"] = _strings(val, RESOURCE_ATTRS)
            elif num == 2:
                spec["nonResourceAttributes"] = _strings(val, {1: "path", 2: "verb"})
            elif num == 3 and tm.get("kind") == "SubjectAccessReview":
                spec["user"] = val.decode()
        obj["spec"] = spec
    elif tm.get("kind") == "SelfSubjectRulesReview":
        obj["spec"] = _strings(spec_raw, {1: "namespace"})
    else:
        raise ValueError(f"the lab cannot decode protobuf {tm.get('kind')}; send JSON")
    return obj
