"""The lab's HTTP API server: routing, discovery, OpenAPI, watch and log streaming.

HTTP/1.1 on 127.0.0.1 with chunked streaming for watches and followed logs, so the real
`kubectl` and the real `kubernetes` Python client talk to it unmodified.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import queue
import socket
import ssl
import subprocess
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import yaml

from . import proto
from .core import LabCore, json_patch, merge_patch
from .rbac import Attributes
from .resources import RESOURCES, Resource, api_resource_list, group_versions, lookup
from .store import ApiError, Obj, Selector, not_found
from .tables import to_table

WATCH_DEFAULT_TIMEOUT = 1800.0


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_doc(group: str, version: str) -> Obj:
    """Just enough OpenAPI v3 for kubectl to see that server-side field validation works."""
    paths: Dict[str, Any] = {}
    param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string",
                                                                     "uniqueItems": True},
             "description": "fieldValidation instructs the server on how to handle objects in "
                            "the request containing unknown or duplicate fields."}
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        base = "/" + _gv_path(group, version)
        path = f"{base}/namespaces/{{namespace}}/{r.name}/{{name}}" if r.namespaced \
            else f"{base}/{r.name}/{{name}}"
        gvk = {"group": group, "version": version, "kind": r.kind}
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": [param],
              "responses": {"200": {"description": "OK"}}, "operationId": f"patch{r.kind}"}
        paths[path] = {"patch": op, "put": dict(op, operationId=f"replace{r.kind}")}
        coll = path.rsplit("/", 1)[0]
        paths[coll] = {"post": dict(op, operationId=f"create{r.kind}")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}


def _doc_hash(group: str, version: str) -> str:
    return hashlib.sha256(json.dumps(openapi_v3_doc(group, version), sort_keys=True)
                          .encode()).hexdigest()[:64].upper()


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LabHTTPServer

    # ------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.access_log:
            self.server.core.log("http " + (format % args))

    def _send_json(self, code: int, obj: Any, ctype: str = "application/json") -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        for text in self.warnings:
            # RFC 7234 warning header, as the API server sends for dropped unknown fields
            self.send_header("Warning", '299 - "' + text.replace('"', '\\"') + '"')
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ApiError) -> None:
        self._send_json(err.code, err.status())

    def _start_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _abort(self) -> None:
        """Cut the connection mid-stream, the way a dropped apiserver/kubelet link looks."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _body(self) -> Any:
        raw = self.raw_body
        if not raw:
            return {}
        ctype = self.headers.get("Content-Type", "")
        try:
            if "protobuf" in ctype:
                return proto.decode(raw)
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, IndexError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: "
                                              f"{exc}") from exc

    def _user(self) -> str:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            u = self.server.core.authz.user_for_token(auth[len("Bearer "):].strip())
            if u is not None:
                return u.name
        raise ApiError(401, "Unauthorized", "Unauthorized")

    # ------------------------------------------------------------ verbs

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        # always consume the body, or an error reply leaves it to be parsed as a request
        self.raw_body = self.rfile.read(length) if length else b""
        self.warnings: List[str] = []
        self.query: Dict[str, str] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._route(method, url.path.rstrip("/") or "/")
        except ApiError as err:
            with contextlib.suppress(OSError):
                self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            self.server.core.log(f"500 on {method} {self.path}:\n{traceback.format_exc()}")
            with contextlib.suppress(OSError):
                self._send_error(ApiError(500, "InternalError", "internal error in the lab"))

    # ------------------------------------------------------------ routes

    def _route(self, method: str, path: str) -> None:
        core = self.server.core
        if path in ("/healthz", "/readyz", "/livez"):
            self._send_text(200, b"ok")
            return
        if path == "/version":
            self._send_json(200, {
                "major": "1", "minor": "32", "gitVersion": "v1.32.0-offwake-lab",
                "gitCommit": "0" * 40, "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0",
                "compiler": "gc", "platform": "linux/amd64"})
            return
        if path == "/lab/control" and method == "POST":
            body = self._body()
            self._send_json(200, core.control(body.pop("op"), body))
            return
        user = self._user()
        parts = [p for p in path.split("/") if p]
        if path == "/api":
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0",
                                       "serverAddress": self.server.address}]})
            return
        if path == "/apis":
            groups = []
            for g, v in group_versions():
                if not g:
                    continue
                entry = {"groupVersion": f"{g}/{v}", "version": v}
                groups.append({"name": g, "versions": [entry], "preferredVersion": entry})
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            return
        if path == "/openapi/v3":
            self._send_json(200, {"paths": {
                _gv_path(g, v): {"serverRelativeURL":
                                 f"/openapi/v3/{_gv_path(g, v)}?hash={_doc_hash(g, v)}"}
                for g, v in group_versions()}})
            return
        if parts[:2] == ["openapi", "v3"]:
            doc_path = "/".join(parts[2:])
            for g, v in group_versions():
                if doc_path == _gv_path(g, v):
                    self._send_json(200, openapi_v3_doc(g, v))
                    return
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts and parts[0] == "openapi":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[:1] == ["api"] and len(parts) >= 2:
            gv, group, rest = parts[1], "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            gv, group, rest = f"{parts[1]}/{parts[2]}", parts[1], parts[3:]
        elif parts[:1] == ["apis"] and len(parts) == 2:
            g = parts[1]
            vs = [v for gg, v in group_versions() if gg == g]
            if not vs:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            gvd = {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}
            self._send_json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": g,
                                  "versions": [gvd], "preferredVersion": gvd})
            return
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            version = gv.split("/")[-1]
            if (group, version) not in group_versions():
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._send_json(200, api_resource_list(group, version))
            return
        ns = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        res = lookup(gv, rest[0])
        if res is None or (ns and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = self._verb(method, name, sub)
        attrs = Attributes(user, verb, group, res.name, sub, ns, name)
        core.authorize(attrs)
        self._serve(method, res, ns, name, sub, user)

    def _verb(self, method: str, name: str, sub: str) -> str:
        if method == "GET":
            if self.query.get("watch") in ("true", "1"):
                return "watch"
            return "get" if name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        return "delete" if name else "deletecollection"

    def _field_validation(self) -> str:
        """The request's fieldValidation (Strict, Warn, Ignore); see schema.py."""
        return self.query.get("fieldValidation") or "Strict"

    def _wants_table(self) -> bool:
        return "as=Table" in self.headers.get("Accept", "")

    def _serve(self, method: str, res: Resource, ns: str, name: str, sub: str,
               user: str) -> None:
        core = self.server.core
        dry = self.query.get("dryRun") == "All"
        if res.name in ("selfsubjectaccessreviews", "subjectaccessreviews") and method == "POST":
            self._send_json(201, core.access_review(self._body(), user))
            return
        if res.name == "selfsubjectrulesreviews" and method == "POST":
            body = self._body()
            u = core.authz.users.get(user)
            rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}] \
                if u and "system:masters" in u.groups else list(u.rules if u else [])
            body["status"] = {"resourceRules": rules, "nonResourceRules": [],
                              "incomplete": False}
            self._send_json(201, body)
            return
        if sub == "scale":
            self._scale(method, res, ns, name)
            return
        if method == "GET":
            if sub == "log":
                self._logs(ns, name)
                return
            if not name:
                self._list_or_watch(res, ns)
                return
            obj = core.store.get(res.name, ns, name)
            if obj is None:
                raise not_found(res.name, name, res.group)
            if self._wants_table():
                self._send_json(200, to_table(res.name, [obj],
                                              obj["metadata"]["resourceVersion"],
                                              self.query.get("includeObject", "")))
            else:
                self._send_json(200, obj)
            return
        if method == "POST":
            body = self._body()
            if sub == "eviction":
                pod_res = lookup("v1", "pods")
                assert pod_res is not None
                core.delete(pod_res, ns, name, body.get("deleteOptions") or {})
                self._send_json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                      "status": "Success", "code": 201})
                return
            if sub == "binding":
                target = (body.get("target") or {}).get("name", "")

                def bind(o: Obj) -> None:
                    o["spec"]["nodeName"] = target
                core.store.mutate("pods", ns, name, bind)
                self._send_json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                      "status": "Success", "code": 201})
                return
            if name:
                raise ApiError(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource")
            obj = core.create(res, ns, body, dry_run=dry, validation=self._field_validation(),
                              warnings=self.warnings)
            self._send_json(201, obj)
            return
        if method == "PUT":
            body = self._body()
            if dry:
                self._send_json(200, body)
                return
            self._send_json(200, core.update(res, ns, name, body, sub, self._field_validation(),
                                             self.warnings))
            return
        if method == "PATCH":
            body = self._body()
            ctype = self.headers.get("Content-Type", "application/merge-patch+json")
            self._send_json(200, core.patch(res, ns, name, body, ctype, sub, user,
                                            self._field_validation(), self.warnings))
            return
        if method == "DELETE":
            body = self._body() or {}
            opts = dict(body) if isinstance(body, dict) else {}
            if "gracePeriodSeconds" in self.query:
                opts["gracePeriodSeconds"] = int(self.query["gracePeriodSeconds"])
            if "propagationPolicy" in self.query:
                opts["propagationPolicy"] = self.query["propagationPolicy"]
            if name:
                if dry:
                    obj = core.store.get(res.name, ns, name)
                    if obj is None:
                        raise not_found(res.name, name, res.group)
                    self._send_json(200, obj)
                    return
                self._send_json(200, core.delete(res, ns, name, opts))
                return
            sel = Selector.parse(self.query.get("labelSelector"), self.query.get("fieldSelector"))
            items, rv = core.store.list(res.name, ns or None, sel)
            for it in items:
                with contextlib.suppress(ApiError):
                    core.delete(res, ns or it["metadata"].get("namespace", ""),
                                it["metadata"]["name"], opts)
            self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                  "metadata": {"resourceVersion": str(rv)}, "items": items})
            return
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    def _scale(self, method: str, res: Resource, ns: str, name: str) -> None:
        """The autoscaling/v1 Scale subresource (`kubectl scale`)."""
        core = self.server.core
        obj = core.store.get(res.name, ns, name)
        if obj is None:
            raise not_found(res.name, name, res.group)
        if method in ("PUT", "PATCH"):
            body = self._body()
            if method == "PATCH":
                cur = {"spec": {"replicas": obj["spec"].get("replicas", 1)}}
                ctype = self.headers.get("Content-Type", "")
                body = json_patch(cur, body) if "json-patch" in ctype else merge_patch(cur, body)
            replicas = int((body.get("spec") or {}).get("replicas", 0))

            def scale(o: Obj) -> None:
                o["spec"]["replicas"] = replicas
                o["metadata"]["generation"] = int(o["metadata"].get("generation", 1)) + 1

            obj = core.store.mutate(res.name, ns, name, scale) or obj
        elif method != "GET":
            raise ApiError(405, "MethodNotAllowed", "method not allowed")
        sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        meta = obj["metadata"]
        self._send_json(200, {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sel.items())},
        })

    # ------------------------------------------------------------ list & watch

    def _list_or_watch(self, res: Resource, ns: str) -> None:
        core = self.server.core
        sel = Selector.parse(self.query.get("labelSelector"), self.query.get("fieldSelector"))
        if self.query.get("watch") in ("true", "1"):
            self._watch(res, ns, sel)
            return
        items, rv = core.store.list(res.name, ns or None, sel)
        if self._wants_table():
            self._send_json(200, to_table(res.name, items, str(rv),
                                          self.query.get("includeObject", "")))
            return
        for it in items:
            it.pop("kind", None)
            it.pop("apiVersion", None)
        self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    def _watch(self, res: Resource, ns: str, sel: Selector) -> None:
        core = self.server.core
        rv = self.query.get("resourceVersion")
        send_initial = self.query.get("sendInitialEvents") == "true"
        timeout = float(self.query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
        try:
            w = core.store.watch(res.name, ns or None, sel, rv, send_initial)
        except ApiError as err:
            if err.code != 410:
                raise
            # like the apiserver: 200, then a single ERROR event carrying the 410 Status
            self._start_stream("application/json")
            self._chunk(json.dumps({"type": "ERROR", "object": err.status()}).encode() + b"\n")
            self._end_stream()
            return
        table = self._wants_table()
        include = self.query.get("includeObject", "")
        self._start_stream("application/json")
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end and not core.stopping:
                try:
                    item = w.queue.get(timeout=min(1.0, max(0.01, end - time.monotonic())))
                except queue.Empty:
                    continue
                if item is None:
                    break
                typ, obj = item
                payload = to_table(res.name, [obj], obj["metadata"]["resourceVersion"],
                                   include) if table else obj
                self._chunk(json.dumps({"type": typ, "object": payload}).encode() + b"\n")
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            core.store.unwatch(w)

    # ------------------------------------------------------------ logs

    def _logs(self, ns: str, name: str) -> None:
        core = self.server.core
        pod = core.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        spec = pod["spec"]
        mains = [c["name"] for c in spec.get("containers") or []]
        inits = [c["name"] for c in spec.get("initContainers") or []]
        container = self.query.get("container", "")
        if not container:
            if len(mains) == 1 and not inits:
                container = mains[0]
            elif (pod["metadata"].get("annotations") or {}).get(
                    "kubectl.kubernetes.io/default-container") in mains:
                container = pod["metadata"]["annotations"][
                    "kubectl.kubernetes.io/default-container"]
            elif len(mains) == 1:
                container = mains[0]
            else:
                msg = f"a container name must be specified for pod {name}, choose one of: " \
                      f"[{' '.join(mains)}]"
                if inits:
                    msg += f" or one of the init containers: [{' '.join(inits)}]"
                raise ApiError(400, "BadRequest", msg)
        if container not in mains + inits:
            raise ApiError(400, "BadRequest",
                           f"container {container} is not valid for pod {name}")
        previous = self.query.get("previous") in ("true", "1")
        worker = core.find_worker(ns, name)
        buf = worker.log_buffer(container, previous) if worker else None
        if buf is None:
            if previous:
                raise ApiError(400, "BadRequest", f'previous terminated container "{container}" '
                                                  f'in pod "{name}" not found')
            statuses = (pod.get("status") or {}).get("containerStatuses", []) + \
                (pod.get("status") or {}).get("initContainerStatuses", [])
            reason = "ContainerCreating"
            for cs in statuses:
                if cs["name"] == container:
                    reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason", reason)
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            elif reason == "PodInitializing":
                reason = "PodInitializing"
            raise ApiError(400, "BadRequest",
                           f'container "{container}" in pod "{name}" is waiting to start: '
                           f"{reason}")
        follow = self.query.get("follow") in ("true", "1")
        timestamps = self.query.get("timestamps") in ("true", "1")
        since = None
        if self.query.get("sinceTime"):
            since = _dt.datetime.strptime(self.query["sinceTime"][:19], "%Y-%m-%dT%H:%M:%S") \
                .replace(tzinfo=_dt.timezone.utc).timestamp()
        elif self.query.get("sinceSeconds"):
            since = time.time() - int(self.query["sinceSeconds"])
        tail = int(self.query["tailLines"]) if self.query.get("tailLines") else None
        limit = int(self.query["limitBytes"]) if self.query.get("limitBytes") else None
        with buf.cond:
            lines = list(buf.lines)
        start = 0
        if since is not None:
            while start < len(lines) and lines[start][0] < since:
                start += 1
        if tail is not None:
            start = max(start, len(lines) - tail)
        if not follow:
            out = b"".join(buf.format(ts, d, timestamps) for ts, d in lines[start:])
            if limit is not None:
                out = out[:limit]
            self._send_text(200, out)
            return
        generation = core.cut_log_generation
        self._start_stream("text/plain")
        sent = 0
        idx = start
        try:
            while True:
                with buf.cond:
                    while idx >= len(buf.lines) and not buf.closed:
                        buf.cond.wait(timeout=0.25)
                        if core.log_cut_since(generation, ns, name) or core.stopping:
                            break
                    batch = buf.lines[idx:]
                    closed = buf.closed
                if core.log_cut_since(generation, ns, name):
                    self._abort()
                    return
                idx += len(batch)
                data = b"".join(buf.format(ts, d, timestamps) for ts, d in batch)
                if limit is not None:
                    data = data[: max(0, limit - sent)]
                if data:
                    self._chunk(data)
                    sent += len(data)
                if (closed and idx >= len(buf.lines)) or core.stopping or (
                        limit is not None and sent >= limit):
                    break
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, core: LabCore, host: str = "127.0.0.1", port: int = 0,
                 access_log: bool = False, tls: Optional[ssl.SSLContext] = None) -> None:
        super().__init__((host, port), ApiHandler)
        self.core = core
        self.access_log = access_log
        self.tls = tls
        self.address = f"{host}:{self.server_address[1]}"

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the request's own thread, so a slow client blocks nobody."""
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


def make_certificate(state_dir: Path) -> Tuple[Path, Path]:
    """A self-signed serving certificate for 127.0.0.1 (kubectl sends tokens only over TLS)."""
    cert, key = state_dir / "apiserver.crt", state_dir / "apiserver.key"
    if not (cert.exists() and key.exists()):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "30", "-subj", "/CN=offwake-lab-apiserver",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True)
    return cert, key


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx

