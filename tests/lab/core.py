"""The lab's control plane: API semantics, admission, scheduling, controllers, GC.

The HTTP layer (server.py) only parses requests; everything a real API server and
controller-manager decide (defaults, validation, Pod Security, RBAC, graceful deletion,
owner references, Deployment -> ReplicaSet -> Pod) happens here.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import queue
import random
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from . import podsecurity
from .images import ImageStore
from .kubelet import Kubelet, PodWorker, qos_class
from .rbac import Attributes, Authorizer, User
from .resources import RESOURCES, Resource, lookup
from .runtime import Ledger, remove_mountpoint
from .schema import Cause, Schemas
from .store import (
    ApiError,
    Event,
    Obj,
    Selector,
    Store,
    match_label_selector,
    not_found,
    now_iso,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SAFE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _rand_suffix(n: int = 5) -> str:
    return "".join(random.choice(SAFE_CHARS) for _ in range(n))


@dataclass
class LabConfig:
    """Everything that makes one lab different from another running in parallel."""

    prefix: str = "offwake-lab"
    state_dir: Path = Path("/tmp/offwake-lab")
    nodes: List[str] = field(default_factory=lambda: ["lab-node-1", "lab-node-2"])
    namespaces: List[str] = field(default_factory=lambda: ["default", "kube-system", "app"])
    users: List[User] = field(default_factory=list)
    systemd_cgroup: bool = True
    unpullable: List[str] = field(default_factory=lambda: [r"(^|/)[^/]*\.invalid/"])
    backoff_base: float = 1.0
    backoff_max: float = 10.0
    max_grace_on_stop: float = 3.0


@dataclass
class AdmissionRule:
    """A switchable validating-webhook-like rejection."""

    resource: str
    message: str
    namespace: Optional[str] = None
    name: Optional[str] = None
    label_selector: Optional[str] = None
    operation: str = "CREATE"
    code: int = 400


class LabCore:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.prefix = config.prefix
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.state_dir / "ledger.jsonl")
        self.systemd_cgroup = config.systemd_cgroup
        self.backoff_base = config.backoff_base
        self.backoff_max = config.backoff_max
        self.max_grace = config.max_grace_on_stop
        self.stopping = False
        self.store = Store()
        self.schemas = Schemas()
        self.authz = Authorizer(config.users)
        self.unpullable: List[str] = list(config.unpullable)
        self.registry = ""  # 127.0.0.1:PORT of the lab's registry (set by the daemon)
        self.images = ImageStore(self.state_dir / "images", self.log, self.ledger.add_pid)
        self.admission: List[AdmissionRule] = []
        self.cut_log_generation = 0
        self.cut_lock = threading.Condition()
        self.cut_targets: List[tuple] = []
        self.log_lock = threading.Lock()
        self.mount_lock = threading.Lock()
        self.pending_mountpoints: Set[Path] = set()
        self.kubelets: Dict[str, Kubelet] = {}
        for i, spec in enumerate(config.nodes):
            name, _, runtime = spec.partition(":")
            self.kubelets[name] = Kubelet(self, name, i + 1, runtime or "containerd")
        self.events: queue.Queue[Optional[Event]] = queue.Queue()
        self.store.hooks.append(self.events.put)
        self.controller = threading.Thread(target=self._control_loop, name="controllers",
                                           daemon=True)
        self.resync = threading.Thread(target=self._resync_loop, name="resync", daemon=True)

    # ------------------------------------------------------------ housekeeping

    def log(self, msg: str) -> None:
        with self.log_lock, (self.state_dir / "lab.log").open("a") as f:
            f.write(f"{now_iso()} {msg}\n")

    def start(self) -> None:
        for k in self.kubelets.values():
            self.store.create("nodes", k.node_object())
        for ns in self.config.namespaces:
            self.store.create("namespaces", self._namespace_obj(ns))
            self.store.create("serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": ns}})
        self.controller.start()
        self.resync.start()

    def stop(self) -> None:
        """Stop every pod (short grace), then the controllers."""
        self.stopping = True
        self.store.close_watches()
        threads = [threading.Thread(target=k.shutdown, args=(self.max_grace,))
                   for k in self.kubelets.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.events.put(None)

    def release_mountpoints(self, paths: List[Path]) -> None:
        """Remove mountpoints the lab created once no pod mounts anything there any more.

        Ones still in use (another pod of any lab mounts there) wait for a later call.
        """
        with self.mount_lock:
            self.pending_mountpoints.update(paths)
            for p in sorted(self.pending_mountpoints, key=lambda x: -len(x.parts)):
                if not p.exists() or remove_mountpoint(p):
                    self.pending_mountpoints.discard(p)

    def image_unpullable(self, image: str) -> bool:
        return any(re.search(p, image) for p in list(self.unpullable))

    def find_worker(self, namespace: str, name: str) -> Optional[PodWorker]:
        for k in self.kubelets.values():
            w = k.worker(namespace, name)
            if w is not None:
                return w
        return None

    def record_event(self, obj: Obj, reason: str, message: str, type_: str = "Normal",
                     component: str = "kubelet", host: str = "") -> None:
        """A core/v1 Event about obj, counted up when the same one repeats (like kubelet)."""
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = hashlib.sha256(f"{meta['uid']}/{reason}/{message}".encode()).hexdigest()[:16]
        name = f"{meta['name']}.{key}"
        now = now_iso()

        def bump(o: Obj) -> None:
            o["count"] = int(o.get("count", 1)) + 1
            o["lastTimestamp"] = now

        if self.store.mutate("events", ns, name, bump) is not None:
            return
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        with contextlib.suppress(ApiError):
            self.store.create("events", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": obj.get("kind", "Pod"), "namespace": ns,
                                   "name": meta["name"], "uid": meta["uid"],
                                   "apiVersion": obj.get("apiVersion", "v1")},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now, "source": source,
                "reportingComponent": component, "reportingInstance": host,
            })

    # ------------------------------------------------------------ authorization

    def authorize(self, attrs: Attributes) -> None:
        allowed, _ = self.authz.authorize(attrs)
        if not allowed:
            from .rbac import forbidden_message
            raise ApiError(403, "Forbidden", forbidden_message(attrs), {
                "name": attrs.name, "group": attrs.group, "kind": attrs.resource,
            } if attrs.name else {"group": attrs.group, "kind": attrs.resource}
                if attrs.group else {"kind": attrs.resource})

    def access_review(self, body: Obj, user: str) -> Obj:
        spec = body.get("spec") or {}
        ra = spec.get("resourceAttributes")
        out = copy.deepcopy(body)
        out.setdefault("apiVersion", "authorization.k8s.io/v1")
        out.setdefault("kind", "SelfSubjectAccessReview")
        out.setdefault("metadata", {})["creationTimestamp"] = None
        if ra is None:
            out["status"] = {"allowed": False, "reason": "non-resource URLs are not authorized"}
            return out
        attrs = Attributes(
            user=spec.get("user", user) if body.get("kind") == "SubjectAccessReview" else user,
            verb=ra.get("verb", ""), group=ra.get("group", ""), resource=ra.get("resource", ""),
            subresource=ra.get("subresource", ""), namespace=ra.get("namespace", ""),
            name=ra.get("name", ""),
        )
        allowed, reason = self.authz.authorize(attrs)
        status: Obj = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        out["status"] = status
        return out

    # ------------------------------------------------------------ create

    def _namespace_obj(self, name: str, labels: Optional[Dict[str, str]] = None) -> Obj:
        lab = {"kubernetes.io/metadata.name": name}
        lab.update(labels or {})
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": lab},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    def _invalid(self, res: Resource, name: str, causes: List[tuple]) -> ApiError:
        msgs = []
        out_causes = []
        for fld, reason, msg in causes:
            msgs.append(f"{fld}: {msg}")
            out_causes.append({"reason": reason, "message": msg, "field": fld})
        joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
        return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {joined}',
                        {"name": name, "group": res.group, "kind": res.kind,
                         "causes": out_causes} if res.group else
                        {"name": name, "kind": res.kind, "causes": out_causes})

    def _validate_meta(self, res: Resource, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        if not name:
            raise self._invalid(res, "", [("metadata.name", "FieldValueRequired",
                                           "Required value: name or generateName is required")])
        pattern = DNS1123_LABEL if res.name in ("namespaces", "pods", "services") \
            else DNS1123_SUBDOMAIN
        if res.name == "pods":
            pattern = DNS1123_SUBDOMAIN
        if not pattern.match(name) or len(name) > 253:
            raise self._invalid(res, name, [(
                "metadata.name", "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")])
        for k, v in (meta.get("labels") or {}).items():
            if not isinstance(v, str) or len(v) > 63:
                raise self._invalid(res, name, [("metadata.labels", "FieldValueInvalid",
                                                 f'Invalid value: "{v}"')])
            del k

    def _validate_pod(self, name: str, spec: Obj, res: Resource,
                      schema_causes: Optional[List[Cause]] = None) -> None:
        causes: List[tuple] = list(schema_causes or [])
        containers = spec.get("containers") or []
        if not containers:
            causes.append(("spec.containers", "FieldValueRequired", "Required value"))
        seen = set()
        for kind in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(kind) or []):
                base = f"spec.{kind}[{i}]"
                if not c.get("name"):
                    causes.append((f"{base}.name", "FieldValueRequired", "Required value"))
                elif c["name"] in seen:
                    causes.append((f"{base}.name", "FieldValueDuplicate",
                                   f'Duplicate value: "{c["name"]}"'))
                seen.add(c.get("name"))
                if not c.get("image"):
                    causes.append((f"{base}.image", "FieldValueRequired", "Required value"))
                rp = c.get("restartPolicy")
                if rp is not None and (kind == "containers" or rp != "Always"):
                    causes.append((f"{base}.restartPolicy", "FieldValueNotSupported",
                                   f'Unsupported value: "{rp}": supported values: "Always"'))
        if spec.get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
            causes.append(("spec.restartPolicy", "FieldValueNotSupported",
                           f'Unsupported value: "{spec["restartPolicy"]}": supported values: '
                           '"Always", "OnFailure", "Never"'))
        ads = spec.get("activeDeadlineSeconds")
        if ads is not None and (not isinstance(ads, int) or ads <= 0):
            causes.append(("spec.activeDeadlineSeconds", "FieldValueInvalid",
                           f"Invalid value: {ads}: must be between 1 and 2147483647, inclusive"))
        vol_names = {v.get("name") for v in spec.get("volumes") or []}
        for kind in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(kind) or []):
                for j, vm in enumerate(c.get("volumeMounts") or []):
                    if vm.get("name") not in vol_names:
                        causes.append((f"spec.{kind}[{i}].volumeMounts[{j}].name",
                                       "FieldValueNotFound", f'Not found: "{vm.get("name")}"'))
        if causes:
            raise self._invalid(res, name, list(dict.fromkeys(causes)))

    def _default_pod(self, pod: Obj) -> None:
        spec = pod.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
        ])
        for kind in ("initContainers", "containers"):
            for c in spec.get(kind) or []:
                image = c.get("image", "")
                tag = image.rsplit("/", 1)[-1]
                c.setdefault("imagePullPolicy",
                             "Always" if (":" not in tag or tag.endswith(":latest"))
                             and "@" not in tag else "IfNotPresent")
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
                for port in c.get("ports") or []:
                    port.setdefault("protocol", "TCP")
        pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod)}

    def _admit(self, res: Resource, ns: str, obj: Obj, operation: str) -> None:
        name = obj["metadata"]["name"]
        labels = obj["metadata"].get("labels") or {}
        for rule in list(self.admission):
            if rule.resource != res.name or rule.operation != operation:
                continue
            if rule.namespace and rule.namespace != ns:
                continue
            if rule.name and not re.search(rule.name, name):
                continue
            if rule.label_selector and not Selector.parse(rule.label_selector, None).matches(obj):
                continue
            raise ApiError(rule.code, "BadRequest" if rule.code == 400 else "Forbidden",
                           f'admission webhook "lab.offwake.test" denied the request: '
                           f"{rule.message}")
        del labels
        if res.name == "pods" and operation == "CREATE":
            nso = self.store.get("namespaces", "", ns) or {}
            msg = podsecurity.enforce_message(
                (nso.get("metadata") or {}).get("labels") or {}, name, obj.get("spec") or {})
            if msg:
                raise ApiError(403, "Forbidden", msg, {"name": name, "kind": "pods"})

    def _check_schema(self, res: Resource, obj: Obj, validation: str,
                      warnings: Optional[List[str]]) -> List[Cause]:
        """Decode-time checks against the API schemas (400); the 422 causes they found."""
        if res.name not in ("pods", "configmaps"):
            return []
        causes = self.schemas.check(res.name, obj, validation, warnings)
        if causes and res.name != "pods":
            raise self._invalid(res, (obj.get("metadata") or {}).get("name", ""), causes)
        return causes

    def create(self, res: Resource, ns: str, obj: Obj, dry_run: bool = False,
               validation: str = "Strict", warnings: Optional[List[str]] = None) -> Obj:
        obj = copy.deepcopy(obj)
        schema_causes = self._check_schema(res, obj, validation, warnings)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != ns:
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the "
                               "namespace sent on the request")
            meta["namespace"] = ns
            nso = self.store.get("namespaces", "", ns)
            if nso is None:
                raise not_found("namespaces", ns)
            if nso["metadata"].get("deletionTimestamp"):
                raise ApiError(403, "Forbidden",
                               f"{res.name} \"{meta.get('name', '')}\" is forbidden: unable to "
                               f"create new content in namespace {ns} because it is being "
                               "terminated", {"name": meta.get("name", ""), "kind": res.name})
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _rand_suffix()
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        self._validate_meta(res, obj)
        if res.name == "pods":
            self._validate_pod(meta["name"], obj.get("spec") or {}, res, schema_causes)
            self._default_pod(obj)
        elif res.name == "namespaces":
            obj["spec"] = obj.get("spec") or {}
            obj["spec"].setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        elif res.name in ("deployments", "replicasets", "statefulsets", "daemonsets"):
            self._validate_workload(res, obj)
        elif res.name == "secrets":
            sd = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for k, v in sd.items():
                data[k] = base64.b64encode(v.encode()).decode()
            obj.setdefault("type", "Opaque")
        self._admit(res, ns, obj, "CREATE")
        if dry_run:
            meta.setdefault("uid", "00000000-0000-0000-0000-000000000000")
            meta.setdefault("creationTimestamp", now_iso())
            return obj
        return self.store.create(res.name, obj, res.group)

    def _validate_workload(self, res: Resource, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        name = obj["metadata"]["name"]
        sel = spec.get("selector")
        tmpl = spec.get("template") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if not sel:
            raise self._invalid(res, name, [("spec.selector", "FieldValueRequired",
                                             "Required value")])
        if not match_label_selector(sel, labels):
            raise self._invalid(res, name, [(
                "spec.template.metadata.labels", "FieldValueInvalid",
                f"Invalid value: {json.dumps(labels)}: `selector` does not match template "
                "`labels`")])
        self._validate_pod(name, tmpl.get("spec") or {}, res)
        if res.name != "daemonsets":
            spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        obj.setdefault("status", {})

    # ------------------------------------------------------------ update/patch

    def update(self, res: Resource, ns: str, name: str, obj: Obj, sub: str = "",
               validation: str = "Strict", warnings: Optional[List[str]] = None) -> Obj:
        cur = self.store.get(res.name, ns, name)
        if cur is None:
            raise not_found(res.name, name, res.group)
        obj = copy.deepcopy(obj)
        schema_causes = self._check_schema(res, obj, validation, warnings)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name "
                                              "on the URL")
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = ns
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if k in cur["metadata"]:
                meta[k] = cur["metadata"][k]
        if sub == "status":
            new = copy.deepcopy(cur)
            new["status"] = obj.get("status", {})
            new["metadata"]["resourceVersion"] = meta.get("resourceVersion", "")
            obj = new
        elif "status" in cur and res.name != "namespaces":
            obj["status"] = cur["status"]
        if (obj.get("spec") != cur.get("spec")) and sub != "status":
            meta["generation"] = int(cur["metadata"].get("generation", 1)) + 1
        else:
            meta["generation"] = cur["metadata"].get("generation", 1)
        if res.name == "pods" and sub != "status":
            self._validate_pod(name, obj.get("spec") or {}, res, schema_causes)
        return self.store.replace(res.name, obj, res.group)

    def patch(self, res: Resource, ns: str, name: str, patch: Any, ctype: str,
              sub: str = "", user: str = "", validation: str = "Strict",
              warnings: Optional[List[str]] = None) -> Obj:
        cur = self.store.get(res.name, ns, name)
        if "apply-patch" in ctype:
            if cur is None:
                return self.create(res, ns, patch, validation=validation, warnings=warnings)
            new = merge_patch(cur, patch)
        elif cur is None:
            raise not_found(res.name, name, res.group)
        elif "json-patch" in ctype:
            new = json_patch(cur, patch)
        elif "strategic-merge-patch" in ctype:
            new = strategic_merge(cur, patch)
        else:
            new = merge_patch(cur, patch)
        new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
        del user
        return self.update(res, ns, name, new, sub, validation, warnings)

    # ------------------------------------------------------------ delete

    def delete(self, res: Resource, ns: str, name: str, options: Obj) -> Obj:
        cur = self.store.get(res.name, ns, name)
        if cur is None:
            raise not_found(res.name, name, res.group)
        pre = (options.get("preconditions") or {})
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise ApiError(409, "Conflict",
                           f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                           f"object meta: {cur['metadata']['uid']}")
        propagation = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background")
        if res.name == "pods":
            return self._delete_pod(cur, options)
        if res.name == "namespaces":
            def mark(o: Obj) -> None:
                o["metadata"].setdefault("deletionTimestamp", now_iso())
                o["status"] = {"phase": "Terminating"}
            marked = self.store.mutate("namespaces", "", name, mark)
            return marked or cur
        if propagation == "Orphan":
            self._orphan(cur["metadata"]["uid"])
        removed = self.store.remove(res.name, ns, name)
        return removed or cur

    def _delete_pod(self, pod: Obj, options: Obj) -> Obj:
        meta = pod["metadata"]
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        node = pod["spec"].get("nodeName")
        if not node or node not in self.kubelets or int(grace) == 0:
            removed = self.store.remove("pods", meta["namespace"], meta["name"])
            return removed or pod
        if meta.get("deletionTimestamp"):
            cur_grace = meta.get("deletionGracePeriodSeconds", grace)
            if int(grace) >= int(cur_grace):
                return pod

        def mark(o: Obj) -> None:
            o["metadata"]["deletionTimestamp"] = now_iso()
            o["metadata"]["deletionGracePeriodSeconds"] = int(grace)

        return self.store.mutate("pods", meta["namespace"], meta["name"], mark) or pod

    def _orphan(self, uid: str) -> None:
        for (res, ns, name), o in list(self.store.objects.items()):
            refs = o["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                def drop(obj: Obj) -> None:
                    obj["metadata"]["ownerReferences"] = [
                        r for r in obj["metadata"].get("ownerReferences") or []
                        if r.get("uid") != uid]
                self.store.mutate(res, ns, name, drop)

    # ------------------------------------------------------------ controllers

    def _control_loop(self) -> None:
        while True:
            ev = self.events.get()
            if ev is None:
                return
            try:
                self._handle(ev)
            except Exception:
                self.log(f"controller error on {ev.type} {ev.resource}:\n{traceback.format_exc()}")

    def _resync_loop(self) -> None:
        while not self.stopping:
            time.sleep(1.0)
            try:
                self._resync()
            except Exception:
                self.log(f"resync error:\n{traceback.format_exc()}")

    def _resync(self) -> None:
        for res in ("deployments", "replicasets", "daemonsets", "statefulsets"):
            items, _ = self.store.list(res)
            for it in items:
                self._reconcile(res, it)
        items, _ = self.store.list("namespaces")
        for nso in items:
            if nso["metadata"].get("deletionTimestamp"):
                self._finish_namespace(nso["metadata"]["name"])
        pods, _ = self.store.list("pods")
        for p in pods:
            if not p["spec"].get("nodeName"):
                self._schedule(p)
            elif p["spec"]["nodeName"] in self.kubelets and not self.stopping:
                self.kubelets[p["spec"]["nodeName"]].maybe_run(p)

    def _handle(self, ev: Event) -> None:
        obj = ev.obj
        meta = obj["metadata"]
        if ev.type == "DELETED":
            self._collect_dependents(meta["uid"])
        if ev.resource == "pods":
            node = obj["spec"].get("nodeName")
            if ev.type != "DELETED":
                if not node:
                    self._schedule(obj)
                elif node in self.kubelets:
                    self.kubelets[node].maybe_run(obj)
                else:
                    self._unschedulable(obj, f'0/{len(self.kubelets)} nodes are available: '
                                             f'node "{node}" not found.')
            for ref in meta.get("ownerReferences") or []:
                owner_res = {"ReplicaSet": "replicasets", "DaemonSet": "daemonsets",
                             "StatefulSet": "statefulsets"}.get(ref.get("kind", ""))
                if owner_res:
                    owner = self.store.get(owner_res, meta["namespace"], ref["name"])
                    if owner is not None:
                        self._reconcile(owner_res, owner)
        elif ev.resource in ("deployments", "replicasets", "daemonsets", "statefulsets"):
            if ev.type != "DELETED":
                self._reconcile(ev.resource, obj)
            for ref in meta.get("ownerReferences") or []:
                if ref.get("kind") == "Deployment":
                    owner = self.store.get("deployments", meta["namespace"], ref["name"])
                    if owner is not None:
                        self._reconcile("deployments", owner)
        elif ev.resource == "namespaces" and meta.get("deletionTimestamp"):
            self._finish_namespace(meta["name"])

    def _collect_dependents(self, uid: str) -> None:
        for (res, ns, name), o in list(self.store.objects.items()):
            refs = o["metadata"].get("ownerReferences") or []
            if refs and any(r.get("uid") == uid for r in refs):
                remaining = [r for r in refs if r.get("uid") != uid and self._uid_exists(r)]
                if remaining:
                    continue
                r = lookup("v1" if res in ("pods", "configmaps", "secrets", "services",
                                           "serviceaccounts", "events")
                           else ("apps/v1" if res in ("deployments", "replicasets",
                                                      "daemonsets", "statefulsets")
                                 else ""), res)
                if r is not None and not o["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.delete(r, ns, name, {})

    def _uid_exists(self, ref: Obj) -> bool:
        return any(o["metadata"]["uid"] == ref.get("uid") for o in self.store.objects.values())

    def _finish_namespace(self, ns: str) -> None:
        left = [(res, n) for (res, nns, n) in list(self.store.objects) if nns == ns]
        for res, n in left:
            rr = next((x for x in RESOURCES if x.name == res), None)
            cur = self.store.get(res, ns, n)
            if rr is None or cur is None:
                continue
            if res == "pods" and cur["metadata"].get("deletionTimestamp"):
                continue
            with contextlib.suppress(ApiError):
                self.delete(rr, ns, n, {})
        if not [k for k in self.store.objects if k[1] == ns]:
            self.store.remove("namespaces", "", ns)

    def _schedule(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp") or self.stopping:
            return
        sel = pod["spec"].get("nodeSelector") or {}
        nodes, _ = self.store.list("nodes")
        fits = [n for n in nodes
                if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
                and not n["spec"].get("unschedulable")]
        if not fits:
            self._unschedulable(pod, f"0/{len(nodes)} nodes are available: {len(nodes)} node(s) "
                                     "didn't match Pod's node affinity/selector. preemption: "
                                     f"0/{len(nodes)} nodes are available: {len(nodes)} "
                                     "Preemption is not helpful for scheduling.")
            return
        counts = {n["metadata"]["name"]: 0 for n in fits}
        pods, _ = self.store.list("pods")
        for p in pods:
            nn = p["spec"].get("nodeName")
            if nn in counts:
                counts[nn] += 1
        target = min(counts, key=lambda k: (counts[k], k))

        def bind(o: Obj) -> Optional[bool]:
            if o["spec"].get("nodeName"):
                return False
            o["spec"]["nodeName"] = target
            st = o.setdefault("status", {})
            st["conditions"] = [c for c in st.get("conditions") or []
                                if c["type"] != "PodScheduled"] + [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": now_iso()}]
            return None

        bound = self.store.mutate("pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                                  bind)
        if bound is not None and bound["spec"].get("nodeName") == target:
            self.record_event(bound, "Scheduled", f"Successfully assigned "
                              f"{pod['metadata']['namespace']}/{pod['metadata']['name']} to "
                              f"{target}", component="default-scheduler")

    def _unschedulable(self, pod: Obj, message: str) -> None:
        conds = (pod.get("status") or {}).get("conditions") or []
        if any(c["type"] == "PodScheduled" and c.get("message") == message for c in conds):
            return

        def mark(o: Obj) -> None:
            st = o.setdefault("status", {})
            st["phase"] = "Pending"
            st["conditions"] = [c for c in st.get("conditions") or []
                                if c["type"] != "PodScheduled"] + [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": message, "lastProbeTime": None, "lastTransitionTime": now_iso()}]

        self.store.mutate("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], mark)
        self.record_event(pod, "FailedScheduling", message, "Warning",
                          component="default-scheduler")

    # -- workloads

    def _owned(self, res: str, ns: str, uid: str) -> List[Obj]:
        items, _ = self.store.list(res, ns)
        return [o for o in items
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    @staticmethod
    def _owner_ref(owner: Obj) -> Obj:
        return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}

    def _pod_from_template(self, owner: Obj, name: str, extra_labels: Dict[str, str],
                           node: str = "") -> None:
        tmpl = copy.deepcopy(owner["spec"]["template"])
        meta = tmpl.get("metadata") or {}
        pod: Obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": owner["metadata"]["namespace"],
                         "labels": {**(meta.get("labels") or {}), **extra_labels},
                         "annotations": meta.get("annotations") or {},
                         "ownerReferences": [self._owner_ref(owner)]},
            "spec": tmpl.get("spec") or {},
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        if node:
            pod["spec"]["nodeName"] = node
        res = lookup("v1", "pods")
        assert res is not None
        try:
            self.create(res, owner["metadata"]["namespace"], pod)
        except ApiError as exc:
            self.log(f"controller could not create pod {name}: {exc.message}")

    def _reconcile(self, res: str, obj: Obj) -> None:
        if obj["metadata"].get("deletionTimestamp") or self.stopping:
            return
        ns = obj["metadata"]["namespace"]
        if res == "deployments":
            self._reconcile_deployment(obj)
            return
        pods = [p for p in self._owned("pods", ns, obj["metadata"]["uid"])
                if not p["metadata"].get("deletionTimestamp")]
        pod_res = lookup("v1", "pods")
        assert pod_res is not None
        if res == "replicasets":
            want = int(obj["spec"].get("replicas", 1))
            hash_label = (obj["metadata"].get("labels") or {}).get("pod-template-hash")
            extra = {"pod-template-hash": hash_label} if hash_label else {}
            for _ in range(want - len(pods)):
                self._pod_from_template(obj, f"{obj['metadata']['name']}-{_rand_suffix()}", extra)
            for p in sorted(pods, key=lambda p: p["metadata"]["name"])[want:] if len(pods) > want \
                    else []:
                with contextlib.suppress(ApiError):
                    self.delete(pod_res, ns, p["metadata"]["name"], {})
        elif res == "daemonsets":
            have = {p["spec"].get("nodeName") for p in pods}
            for node in self.kubelets:
                if node not in have:
                    self._pod_from_template(obj, f"{obj['metadata']['name']}-{_rand_suffix()}",
                                            {}, node)
        elif res == "statefulsets":
            want = int(obj["spec"].get("replicas", 1))
            names = {p["metadata"]["name"] for p in pods}
            for i in range(want):
                n = f"{obj['metadata']['name']}-{i}"
                if n not in names and self.store.get("pods", ns, n) is None:
                    self._pod_from_template(obj, n, {"statefulset.kubernetes.io/pod-name": n})
        pods = [p for p in self._owned("pods", ns, obj["metadata"]["uid"])
                if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in p.get("status", {}).get("conditions") or []))
        if res == "daemonsets":
            status = {"currentNumberScheduled": len(pods), "desiredNumberScheduled":
                      len(self.kubelets), "numberReady": ready, "numberAvailable": ready,
                      "updatedNumberScheduled": len(pods), "numberMisscheduled": 0,
                      "observedGeneration": obj["metadata"].get("generation", 1)}
        else:
            status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                      "fullyLabeledReplicas": len(pods),
                      "observedGeneration": obj["metadata"].get("generation", 1)}
            if res == "statefulsets":
                status.pop("fullyLabeledReplicas")
                status.update({"currentReplicas": len(pods), "updatedReplicas": len(pods)})
        self._set_status(res, obj, status)

    def _set_status(self, res: str, obj: Obj, status: Obj) -> None:
        if obj.get("status") == status:
            return

        def put(o: Obj) -> Optional[bool]:
            if o.get("status") == status:
                return False
            o["status"] = status
            return None

        self.store.mutate(res, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], put)

    def _reconcile_deployment(self, dep: Obj) -> None:
        ns = dep["metadata"]["namespace"]
        tmpl = dep["spec"]["template"]
        digest = hashlib.sha256(json.dumps(tmpl, sort_keys=True).encode()).digest()
        phash = "".join(SAFE_CHARS[b % len(SAFE_CHARS)] for b in digest[:10])
        rs_name = f"{dep['metadata']['name']}-{phash}"
        owned = self._owned("replicasets", ns, dep["metadata"]["uid"])
        rs_res = lookup("apps/v1", "replicasets")
        assert rs_res is not None
        want = int(dep["spec"].get("replicas", 1))
        current = None
        for rs in owned:
            if rs["metadata"]["name"] == rs_name:
                current = rs
            elif int(rs["spec"].get("replicas", 0)) != 0:
                def zero(o: Obj) -> None:
                    o["spec"]["replicas"] = 0
                self.store.mutate("replicasets", ns, rs["metadata"]["name"], zero)
        if current is None:
            sel = copy.deepcopy(dep["spec"]["selector"])
            sel.setdefault("matchLabels", {})["pod-template-hash"] = phash
            t = copy.deepcopy(tmpl)
            t.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = phash
            rs = {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns,
                             "labels": dict(t["metadata"]["labels"]),
                             "annotations": {"deployment.kubernetes.io/revision": "1"},
                             "ownerReferences": [self._owner_ref(dep)]},
                "spec": {"replicas": want, "selector": sel, "template": t},
            }
            with contextlib.suppress(ApiError):
                self.create(rs_res, ns, rs)
        elif int(current["spec"].get("replicas", 0)) != want:
            def scale(o: Obj) -> None:
                o["spec"]["replicas"] = want
            self.store.mutate("replicasets", ns, rs_name, scale)
        owned = self._owned("replicasets", ns, dep["metadata"]["uid"])
        replicas = sum(int((r.get("status") or {}).get("replicas", 0)) for r in owned)
        ready = sum(int((r.get("status") or {}).get("readyReplicas", 0)) for r in owned)
        updated = sum(int((r.get("status") or {}).get("replicas", 0)) for r in owned
                      if r["metadata"]["name"] == rs_name)
        status: Obj = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, want - ready),
            "conditions": [{"type": "Available",
                            "status": "True" if ready >= want else "False",
                            "reason": "MinimumReplicasAvailable" if ready >= want
                            else "MinimumReplicasUnavailable",
                            "message": "Deployment has minimum availability." if ready >= want
                            else "Deployment does not have minimum availability."}],
        }
        if not ready:
            status.pop("readyReplicas")
            status.pop("availableReplicas")
        if not status["unavailableReplicas"]:
            status.pop("unavailableReplicas")
        prev = dep.get("status") or {}
        if prev.get("conditions") and status["conditions"][0]["status"] == \
                prev["conditions"][0].get("status"):
            status["conditions"] = prev["conditions"]
        else:
            for c in status["conditions"]:
                c["lastUpdateTime"] = c["lastTransitionTime"] = now_iso()
        self._set_status("deployments", dep, status)

    # ------------------------------------------------------------ test controls

    def control(self, op: str, args: Obj) -> Obj:
        """The switchboard tests use (over HTTP: POST /lab/control)."""
        fn: Optional[Callable[..., Obj]] = getattr(self, f"_ctl_{op}", None)
        if fn is None:
            raise ApiError(400, "BadRequest", f"unknown lab control {op!r}")
        return fn(**args)

    def _ctl_deny(self, **rule: Any) -> Obj:
        self.authz.deny(rule)
        return {"ok": True}

    def _ctl_clear_denials(self) -> Obj:
        self.authz.clear_denials()
        return {"ok": True}

    def _ctl_set_rules(self, user: str, rules: List[Obj]) -> Obj:
        self.authz.set_rules(user, rules)
        return {"ok": True}

    def _ctl_fail_image_pull(self, pattern: str) -> Obj:
        self.unpullable.append(pattern)
        return {"ok": True}

    def _ctl_clear_image_pull(self) -> Obj:
        self.unpullable = list(self.config.unpullable)
        return {"ok": True}

    def _ctl_reject(self, **rule: Any) -> Obj:
        self.admission.append(AdmissionRule(**rule))
        return {"ok": True}

    def _ctl_clear_admission(self) -> Obj:
        self.admission.clear()
        return {"ok": True}

    def _ctl_oom_kill(self, namespace: str, pod: str, container: str) -> Obj:
        w = self.find_worker(namespace, pod)
        return {"ok": bool(w and w.oom_kill(container))}

    def _ctl_cut_logs(self, namespace: Optional[str] = None, pod: Optional[str] = None) -> Obj:
        with self.cut_lock:
            self.cut_log_generation += 1
            self.cut_targets.append((self.cut_log_generation, namespace, pod))
            self.cut_lock.notify_all()
        return {"ok": True, "generation": self.cut_log_generation}

    def _ctl_pod_runtime(self, namespace: str, pod: str) -> Obj:
        w = self.find_worker(namespace, pod)
        if w is None:
            raise not_found("pods", pod)
        return w.runtime_info()

    def _ctl_pause_node(self, node: str, paused: bool = True) -> Obj:
        if node not in self.kubelets:
            raise not_found("nodes", node)
        self.kubelets[node].paused = paused
        return {"ok": True}

    def _ctl_reset(self) -> Obj:
        for k in self.kubelets.values():
            k.paused = False
        self.authz.clear_denials()
        self.admission.clear()
        self.unpullable = list(self.config.unpullable)
        return {"ok": True}

    def log_cut_since(self, generation: int, namespace: str, pod: str) -> bool:
        """True if a cut_logs control after `generation` targets this pod's streams."""
        with self.cut_lock:
            return any(g > generation and (ns is None or ns == namespace)
                       and (p is None or p == pod) for g, ns, p in self.cut_targets)


# ---------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
              "env": "name", "volumeMounts": "mountPath", "ports": "containerPort",
              "conditions": "type", "ownerReferences": "uid", "imagePullSecrets": "name",
              "tolerations": None}


def strategic_merge(target: Any, patch: Any, key: str = "") -> Any:
    """Strategic merge patch, for the lists the lab's objects have (merge by key)."""
    if isinstance(patch, dict) and isinstance(target, dict):
        out = copy.deepcopy(target)
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: v for k, v in patch.items() if k != "$patch"}
        for k, v in patch.items():
            if k.startswith("$setElementOrder/") or k.startswith("$deleteFromPrimitiveList/") \
                    or k == "$retainKeys":
                continue
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge(out.get(k), v, k)
        return out
    if isinstance(patch, list) and isinstance(target, list) and MERGE_KEYS.get(key):
        mk = MERGE_KEYS[key]
        assert mk is not None
        out_list = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or mk not in item:
                continue
            if item.get("$patch") == "delete":
                out_list = [x for x in out_list if x.get(mk) != item[mk]]
                continue
            for i, x in enumerate(out_list):
                if isinstance(x, dict) and x.get(mk) == item[mk]:
                    out_list[i] = strategic_merge(x, item)
                    break
            else:
                out_list.append({k: v for k, v in item.items() if not k.startswith("$")})
        return out_list
    return copy.deepcopy(patch)


def _pointer(path: str) -> List[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target: Any, ops: List[Obj]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test, copy, move)."""
    doc = copy.deepcopy(target)

    def parent(path: str) -> tuple:
        parts = _pointer(path)
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path: str) -> Any:
        cur = doc
        for p in _pointer(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    try:
        for op in ops:
            kind = op["op"]
            if kind in ("add", "replace", "copy", "move"):
                value = copy.deepcopy(op.get("value")) if kind in ("add", "replace") \
                    else copy.deepcopy(get(op["from"]))
                if kind == "move":
                    p, k = parent(op["from"])
                    p.pop(int(k)) if isinstance(p, list) else p.pop(k)
                p, k = parent(op["path"])
                if isinstance(p, list):
                    if k == "-":
                        p.append(value)
                    elif kind == "replace":
                        p[int(k)] = value
                    else:
                        p.insert(int(k), value)
                else:
                    p[k] = value
            elif kind == "remove":
                p, k = parent(op["path"])
                p.pop(int(k)) if isinstance(p, list) else p.pop(k)
            elif kind == "test" and get(op["path"]) != op.get("value"):
                raise ApiError(422, "Invalid", f"the server rejected our request due to an "
                                               f"error in our request: test failed at "
                                               f"{op['path']}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "Invalid",
                       f"the server rejected our request due to an error in our request: {exc}",
                       ) from exc
    return doc

