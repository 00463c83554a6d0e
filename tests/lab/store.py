"""In-memory object store of the lab's API server: objects, resourceVersions, watches.

One lock guards everything: the lab is small and correctness matters more than speed.
Every change gets a new cluster-wide resourceVersion and is appended to a bounded event log,
so a watch that starts from a resourceVersion replays what it missed (or gets 410 Gone).
"""

from __future__ import annotations

import copy
import datetime as _dt
import queue
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

Obj = Dict[str, Any]
Key = Tuple[str, str, str]  # (resource, namespace, name); namespace "" if cluster scoped

EVENT_LOG_SIZE = 20000


def now_iso() -> str:
    """Kubernetes RFC 3339 timestamp with second precision (metav1.Time)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the API server returns as a metav1.Status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qual = f"{resource}.{group}" if group else resource
    return ApiError(
        404, "NotFound", f'{qual} "{name}" not found',
        {"name": name, "group": group, "kind": resource} if group else
        {"name": name, "kind": resource},
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qual = f"{resource}.{group}" if group else resource
    details: Dict[str, Any] = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return ApiError(409, "AlreadyExists", f'{qual} "{name}" already exists', details)


# ---------------------------------------------------------------- selectors


@dataclass
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: List[str] = field(default_factory=list)

    def matches(self, labels: Dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "=="):
            return labels.get(self.key) == self.values[0]
        if self.op == "!=":
            return labels.get(self.key) != self.values[0]
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        if self.op == "notin":
            return labels.get(self.key) not in self.values
        return False


def _split_top(text: str) -> List[str]:
    """Split a selector on commas that are not inside parentheses."""
    parts: List[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: Optional[str]) -> List[Requirement]:
    """Parse the label selector grammar of k8s.io/apimachinery/pkg/labels."""
    if not text:
        return []
    reqs: List[Requirement] = []
    for part in _split_top(text):
        low = part.replace("\t", " ")
        for op in (" notin ", " in "):
            if op in low:
                key, rest = low.split(op, 1)
                rest = rest.strip()
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise ApiError(400, "BadRequest", f"unable to parse requirement: {part}")
                vals = [v.strip() for v in rest[1:-1].split(",") if v.strip()]
                reqs.append(Requirement(key.strip(), op.strip(), vals))
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(part[1:].strip(), "!exists"))
            elif "!=" in part:
                k, v = part.split("!=", 1)
                reqs.append(Requirement(k.strip(), "!=", [v.strip()]))
            elif "==" in part:
                k, v = part.split("==", 1)
                reqs.append(Requirement(k.strip(), "=", [v.strip()]))
            elif "=" in part:
                k, v = part.split("=", 1)
                reqs.append(Requirement(k.strip(), "=", [v.strip()]))
            else:
                reqs.append(Requirement(part.strip(), "exists"))
    return reqs


def parse_field_selector(text: Optional[str]) -> List[Tuple[str, str, str]]:
    """Field selectors: `a=b`, `a==b`, `a!=b`, comma separated."""
    if not text:
        return []
    out: List[Tuple[str, str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            k, v = part.split("!=", 1)
            out.append((k.strip(), "!=", v.strip()))
        elif "==" in part:
            k, v = part.split("==", 1)
            out.append((k.strip(), "=", v.strip()))
        elif "=" in part:
            k, v = part.split("=", 1)
            out.append((k.strip(), "=", v.strip()))
        else:
            raise ApiError(400, "BadRequest",
                           f"invalid selector: '{text}'; can't understand '{part}'")
    return out


FIELD_PATHS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.restartPolicy": ("spec", "restartPolicy"),
    "spec.schedulerName": ("spec", "schedulerName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
    "status.phase": ("status", "phase"),
    "status.podIP": ("status", "podIP"),
    "status.nominatedNodeName": ("status", "nominatedNodeName"),
    "spec.unschedulable": ("spec", "unschedulable"),
}


def field_value(obj: Obj, path: str) -> str:
    parts = FIELD_PATHS.get(path) or tuple(path.split("."))
    cur: Any = obj
    for p in parts:
        cur = cur.get(p) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


@dataclass
class Selector:
    labels: List[Requirement] = field(default_factory=list)
    fields: List[Tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, label: Optional[str], fields: Optional[str]) -> Selector:
        return cls(parse_label_selector(label), parse_field_selector(fields))

    def matches(self, obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        for path, op, value in self.fields:
            actual = field_value(obj, path)
            if (op == "=" and actual != value) or (op == "!=" and actual == value):
                return False
        return True


def match_label_selector(sel: Optional[Obj], labels: Dict[str, str]) -> bool:
    """metav1.LabelSelector (matchLabels + matchExpressions) against labels."""
    if not sel:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}[
            expr["operator"]
        ]
        if not Requirement(expr["key"], op, list(expr.get("values") or [])).matches(labels):
            return False
    return True


# ---------------------------------------------------------------- store


@dataclass
class Event:
    rv: int
    resource: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Optional[Obj]


class Watcher:
    """A subscriber receiving events for one resource (optionally one namespace)."""

    def __init__(self, resource: str, namespace: Optional[str], selector: Selector) -> None:
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.queue: queue.Queue[Optional[Tuple[str, Obj]]] = queue.Queue()
        self.closed = False

    def offer(self, ev: Event) -> None:
        """Translate a store event into what this watcher should see, like the apiserver."""
        if ev.resource != self.resource:
            return
        ns = ev.obj.get("metadata", {}).get("namespace", "")
        if self.namespace and ns != self.namespace:
            return
        new_match = self.selector.matches(ev.obj)
        old_match = ev.old is not None and self.selector.matches(ev.old)
        if ev.type == "DELETED":
            if new_match or old_match:
                self.queue.put(("DELETED", ev.obj))
        elif ev.type == "ADDED":
            if new_match:
                self.queue.put(("ADDED", ev.obj))
        else:
            if new_match and old_match:
                self.queue.put(("MODIFIED", ev.obj))
            elif new_match:
                self.queue.put(("ADDED", ev.obj))
            elif old_match:
                self.queue.put(("DELETED", ev.obj))

    def close(self) -> None:
        self.closed = True
        self.queue.put(None)


class Store:
    """All objects, keyed by (resource, namespace, name); emits events to watchers/hooks."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: Dict[Key, Obj] = {}
        self.rv = 1000
        self.log: Deque[Event] = deque(maxlen=EVENT_LOG_SIZE)
        self.watchers: List[Watcher] = []
        self.hooks: List[Callable[[Event], None]] = []

    # -- reading
    def get(self, resource: str, namespace: str, name: str) -> Optional[Obj]:
        with self.lock:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, resource: str, namespace: Optional[str] = None, selector: Optional[Selector] = None
    ) -> Tuple[List[Obj], int]:
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (res, ns, _), o in sorted(self.objects.items())
                if res == resource
                and (not namespace or ns == namespace)
                and (selector is None or selector.matches(o))
            ]
            return items, self.rv

    # -- writing
    def _emit(self, resource: str, typ: str, obj: Obj, old: Optional[Obj]) -> None:
        ev = Event(self.rv, resource, typ, copy.deepcopy(obj), old)
        self.log.append(ev)
        for w in list(self.watchers):
            w.offer(ev)
        for hook in list(self.hooks):
            hook(ev)

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def create(self, resource: str, obj: Obj, group: str = "") -> Obj:
        with self.lock:
            meta = obj.setdefault("metadata", {})
            ns = meta.get("namespace", "")
            key = (resource, ns, meta["name"])
            if key in self.objects:
                raise already_exists(resource, meta["name"], group)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_iso())
            meta.setdefault("generation", 1)
            self._bump(obj)
            self.objects[key] = copy.deepcopy(obj)
            self._emit(resource, "ADDED", obj, None)
            return copy.deepcopy(obj)

    def replace(self, resource: str, obj: Obj, group: str = "") -> Obj:
        """Store a new version of an existing object (status or spec update)."""
        with self.lock:
            meta = obj["metadata"]
            key = (resource, meta.get("namespace", ""), meta["name"])
            old = self.objects.get(key)
            if old is None:
                raise not_found(resource, meta["name"], group)
            want = meta.get("resourceVersion")
            if want and want != old["metadata"].get("resourceVersion"):
                raise ApiError(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{meta["name"]}": the object '
                    "has been modified; please apply your changes to the latest version and "
                    "try again",
                    {"name": meta["name"], "kind": resource},
                )
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            self._bump(obj)
            self.objects[key] = copy.deepcopy(obj)
            self._emit(resource, "MODIFIED", obj, copy.deepcopy(old))
            return copy.deepcopy(obj)

    def mutate(
        self, resource: str, namespace: str, name: str, fn: Callable[[Obj], Optional[bool]]
    ) -> Optional[Obj]:
        """Apply fn to the stored object under the lock; fn returns False to skip the write."""
        with self.lock:
            key = (resource, namespace, name)
            cur = self.objects.get(key)
            if cur is None:
                return None
            new = copy.deepcopy(cur)
            if fn(new) is False:
                return copy.deepcopy(cur)
            self._bump(new)
            self.objects[key] = new
            self._emit(resource, "MODIFIED", new, copy.deepcopy(cur))
            return copy.deepcopy(new)

    def remove(self, resource: str, namespace: str, name: str) -> Optional[Obj]:
        """Remove an object for good (after graceful deletion completed)."""
        with self.lock:
            cur = self.objects.pop((resource, namespace, name), None)
            if cur is None:
                return None
            self._bump(cur)
            self._emit(resource, "DELETED", cur, None)
            return copy.deepcopy(cur)

    # -- watching
    def watch(
        self,
        resource: str,
        namespace: Optional[str],
        selector: Selector,
        resource_version: Optional[str],
        send_initial: bool,
    ) -> Watcher:
        with self.lock:
            w = Watcher(resource, namespace, selector)
            if resource_version not in (None, "", "0") and not send_initial:
                try:
                    since = int(resource_version or "0")
                except ValueError:
                    raise ApiError(400, "BadRequest",
                                   f"invalid resource version: {resource_version}") from None
                oldest = self.log[0].rv if self.log else self.rv
                if since < oldest - 1 and since < self.rv:
                    raise ApiError(
                        410, "Expired",
                        f"too old resource version: {since} ({oldest - 1})",
                    )
                for ev in self.log:
                    if ev.rv > since:
                        w.offer(ev)
            else:
                items, _ = self.list(resource, namespace or None, selector)
                for it in items:
                    w.queue.put(("ADDED", it))
            self.watchers.append(w)
            return w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            if w in self.watchers:
                self.watchers.remove(w)

    def close_watches(self) -> None:
        with self.lock:
            for w in self.watchers:
                w.close()
            self.watchers.clear()
