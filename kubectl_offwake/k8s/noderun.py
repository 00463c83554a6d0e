"""One collector pod on one node: create, watch to running, follow, stop, delete.

Lifecycle (every step may be cut short by a stop request, and :meth:`NodeRun.teardown`
runs on every path):

    create ConfigMap → create Pod → ConfigMap owned by the Pod → watch until the
    collector runs (or say why it cannot) → follow its log, resuming on drops →
    delete the Pod (grace period: SIGTERM lets the collector flush) → wait until gone.

The log's lines go to the node's :class:`NodeStream`, the run pipeline's sink
(:mod:`kubectl_offwake.pipeline.sink`): this module only moves bytes and reads the pod.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Protocol, Sequence

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from ..analysis.model import Recording
from ..errors import RunFailed
from .api import Cluster, call, get_json, status_message
from .diagnose import PodState, exit_message, pod_state
from .logs import LineConsumer, LogFollower, read_chunks
from .podspec import (
    COLLECTOR_CONTAINER,
    GRACE_PERIOD_S,
    NodePodOptions,
    collector_configmap,
    node_pod,
    owner_reference,
)

#: How long a collector pod may stay Pending (image pull included) before we give up.
STARTUP_TIMEOUT_S = 180.0
#: Read timeout on a followed log: the collector writes a progress record every interval,
#: so silence this long means the connection is dead and we reconnect.
LOG_READ_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = 10


class NodeStream(LineConsumer, Protocol):
    """Where a node's collector stream goes, and what the node's run reads back from it."""

    @property
    def saw_hello(self) -> bool:
        """The collector started its stream."""

    @property
    def recording(self) -> Recording:
        """What the stream said so far (processes to name, log records)."""

    @property
    def text_tail(self) -> Sequence[str]:
        """The collector's last lines that were no wire records."""

    def add_client_record(self, record: dict) -> None:
        """A record of the client's own (``identity``, ``failure``)."""


@dataclass
class NodeStatus:
    """What a live display shows for one node."""

    node: str
    pod: str
    phase: str = "creating"  # creating|pending|running|streaming|stopping|done|failed
    detail: str = ""
    targets: List[str] = field(default_factory=list)


class NodeRun:
    """Drives one node's collector pod; thread-safe stop requests."""

    def __init__(self, cluster: Cluster, opts: NodePodOptions, zipapp: bytes,
                 stream: NodeStream, on_update: Optional[Callable[[NodeRun], None]] = None,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.cluster = cluster
        self.opts = opts
        self.zipapp = zipapp
        self.pod_manifest = node_pod(opts)
        self.cm_manifest = collector_configmap(opts, zipapp)
        self.name = self.pod_manifest["metadata"]["name"]
        self.namespace = opts.namespace
        self.status = NodeStatus(opts.node, self.name,
                                 targets=[t.label() for t in opts.targets or []])
        self.stream = stream
        self.follower = LogFollower(self)
        self.failure: Optional[str] = None
        self.warnings: List[str] = []
        self.created_pod = False
        self.created_cm = False
        self.last_pod: Optional[dict] = None
        self.stop_requested = threading.Event()
        self.stop_sent = False
        self.startup_timeout_s = startup_timeout_s
        self._stop_deadline = float("inf")
        self._on_update = on_update
        self._lock = threading.Lock()

    # -- helpers ----------------------------------------------------------------------------

    def _set(self, phase: str, detail: str = "") -> None:
        self.status.phase = phase
        self.status.detail = detail
        if self._on_update is not None:
            self._on_update(self)

    # the LineConsumer the follower feeds: the node's stream, and the step it marks

    @property
    def ended(self) -> bool:
        return self.stream.ended

    @property
    def fatal(self) -> Optional[str]:
        return self.stream.fatal

    def feed_line(self, line: str) -> bool:
        new = self.stream.feed_line(line)
        if new and self.status.phase == "running" and self.stream.saw_hello:
            self._set("streaming", "tracing")
        return new

    @property
    def server(self) -> str:
        return self.cluster.config.server

    # -- steps ------------------------------------------------------------------------------

    def create(self) -> None:
        """ConfigMap, then Pod, then the ConfigMap's owner; nothing half-made on failure."""
        core = self.cluster.core
        try:
            body: Any = self.cm_manifest  # plain dicts: sent exactly as --dry-run shows
            core.create_namespaced_config_map(self.namespace, body, _request_timeout=30)
            self.created_cm = True
        except ApiException as exc:
            raise RunFailed(self._create_error("create the collector ConfigMap", exc)) from None
        except Exception as exc:
            call("create the collector ConfigMap", _raise, exc, server=self.server)
        try:
            pod_body: Any = self.pod_manifest
            response: Any = core.create_namespaced_pod(self.namespace, pod_body,
                                                  _preload_content=False, _request_timeout=30)
            pod = json.loads(response.data)
            self.created_pod = True
        except ApiException as exc:
            raise RunFailed(self._create_error("create the collector pod", exc)) from None
        except Exception as exc:
            call("create the collector pod", _raise, exc, server=self.server)
            raise
        self.last_pod = pod
        try:
            call("set the collector ConfigMap's owner", core.patch_namespaced_config_map,
                 self.name, self.namespace,
                 {"metadata": {"ownerReferences": [owner_reference(pod)]}},
                 server=self.server)
        except (RunFailed, ApiException) as exc:
            # not fatal: teardown deletes the ConfigMap explicitly anyway
            self.warnings.append(f"could not make the ConfigMap owned by its pod: {exc}")
        self._set("pending", "created")

    def _create_error(self, what: str, exc: ApiException) -> str:
        message = status_message(exc)
        ns = self.namespace
        setup = "run `kubectl offwake setup` (or pass --collector-namespace)"
        if exc.status == 404 and "namespace" in message.lower():
            return f"the collector namespace {ns} does not exist; {setup}"
        if exc.status == 403 and "podsecurity" in message.lower().replace(" ", ""):
            return (f"namespace {ns} does not allow privileged pods ({message}); {setup} to "
                    "label it for Pod Security 'privileged'")
        lower = message.lower()
        if "admission webhook" in lower or "denied the request" in lower or (
                exc.status == 403 and "admission" in lower):
            return f"admission denied the collector pod in namespace {ns}: {message}"
        if exc.status == 403:
            return (f"not allowed to {what} in namespace {ns}: {message}; ask a cluster admin "
                    "for the RBAC in manifests/ (kubectl offwake setup --dry-run shows it)")
        if exc.status == 409:
            return f"cannot {what}: {message}; run `kubectl offwake cleanup` and retry"
        return f"cannot {what} in namespace {ns}: {message}"

    def wait_started(self) -> PodState:
        """Watch the pod until its collector runs or has already finished; else fail."""
        deadline = time.monotonic() + self.startup_timeout_s
        resource_version = ""
        state = pod_state(self.last_pod)
        while True:
            if state.kind in ("running", "exited"):
                return state
            if state.kind == "failed":
                raise RunFailed(state.message)
            if state.kind == "gone":
                if self.stop_requested.is_set():
                    return state
                raise RunFailed(f"the collector pod {self.namespace}/{self.name} was deleted "
                                "before it started (by someone else?)")
            if self.stop_requested.is_set() and time.monotonic() > self._stop_deadline:
                return PodState("gone", "stopped while the collector was starting")
            if not self.stop_requested.is_set() and time.monotonic() > deadline:
                raise RunFailed(
                    f"the collector pod on node {self.opts.node} is still pending after "
                    f"{int(self.startup_timeout_s)}s ({state.message or 'no reason given'}); "
                    f"check kubectl describe pod -n {self.namespace} {self.name}")
            self._set("stopping" if self.stop_requested.is_set() else "pending", state.message)
            pod, resource_version = self._watch_once(resource_version)
            state = pod_state(pod)

    def _read_pod(self) -> Optional[dict]:
        try:
            return get_json("read the collector pod", self.cluster.core.read_namespaced_pod,
                            self.name, self.namespace, server=self.server)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _watch_once(self, resource_version: str) -> tuple[Optional[dict], str]:
        """One watch request on our pod (a restartable watch, kopf-style).

        Returns the pod's newest state (None once it is gone) and the resourceVersion to
        resume from; "" makes the next call start again from a fresh read (after a 410
        Gone, an ERROR event or a dropped connection).
        """
        if not resource_version:
            pod = self._read_pod()
            self.last_pod = pod
            if pod is None or pod_state(pod).kind != "pending":
                return pod, ""
            resource_version = (pod.get("metadata") or {}).get("resourceVersion", "")
        try:
            response = self.cluster.core.list_namespaced_pod(
                self.namespace, field_selector=f"metadata.name={self.name}", watch=True,
                timeout_seconds=WATCH_TIMEOUT_S, resource_version=resource_version,
                _preload_content=False, _request_timeout=(10, WATCH_TIMEOUT_S + 10))
        except Exception:
            time.sleep(0.5)
            return self.last_pod, ""
        buffer = b""
        try:
            for chunk in read_chunks(response):
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    if not raw.strip():
                        continue
                    event = json.loads(raw)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "DELETED":
                        self.last_pod = None
                        return None, ""
                    if kind not in ("ADDED", "MODIFIED"):
                        return self.last_pod, ""  # ERROR (e.g. 410 Gone): relist
                    self.last_pod = obj
                    resource_version = (obj.get("metadata") or {}).get(
                        "resourceVersion", resource_version)
                    if pod_state(obj).kind != "pending":
                        return obj, resource_version
        except Exception:
            return self.last_pod, ""
        return self.last_pod, resource_version

    def follow(self) -> str:
        """Read the collector's stream to its end; returns the follower's stop reason."""
        self._set("running", "collector started")

        def open_stream(follow: bool) -> Iterable[bytes]:
            response = self.cluster.core.read_namespaced_pod_log(
                self.name, self.namespace, container=COLLECTOR_CONTAINER, follow=follow,
                _preload_content=False, _request_timeout=(10, LOG_READ_TIMEOUT_S),
            )
            return read_chunks(response)

        def finished() -> bool:
            pod = self._read_pod()
            if pod is not None:
                self.last_pod = pod
            state = pod_state(pod)
            return state.kind in ("exited", "failed", "gone")

        reason = self.follower.follow(open_stream, finished, self.stop_requested)
        if self.follower.reconnects and not self.stop_requested.is_set():
            self.warnings.append(
                f"the log stream of node {self.opts.node} dropped {self.follower.reconnects} "
                "time(s); resumed without loss (records are numbered)")
        return reason

    def outcome_error(self, reason: str) -> Optional[str]:
        """A sentence naming the node when its collector failed in a way its stream cannot
        say; None when the stream ended with its ``end`` record (an ``end`` in error is the
        recording's own failure, read by the importer) or the user stopped the collector
        before it finished."""
        node = self.opts.node
        if self.stream.fatal:
            return f"the collector on node {node} sent an unreadable stream: " \
                   f"{self.stream.fatal}"
        if self.stream.ended:
            return None
        state = pod_state(self.last_pod)
        if state.kind == "exited":
            return exit_message(node, state, self.stream.recording.logs,
                                list(self.stream.text_tail)[-20:],
                                self.cm_manifest["metadata"])
        if state.kind == "failed":
            return state.message
        if self.stop_requested.is_set():
            return None  # the user stopped it before its end: what came is what there is
        if reason == "stalled":
            return (f"the log stream of node {node} kept dropping and the collector sent "
                    "nothing new before its end")
        return (f"the collector pod on node {node} went away before the collector finished "
                f"({state.message or state.kind})")

    # -- stopping ---------------------------------------------------------------------------

    def request_stop(self, grace_s: int = GRACE_PERIOD_S) -> None:
        """Ask the collector to stop: delete its pod with a grace period (SIGTERM first)."""
        if not self.stop_requested.is_set():
            self._stop_deadline = time.monotonic() + grace_s + 15
        self.stop_requested.set()
        with self._lock:
            if not self.created_pod or (self.stop_sent and grace_s > 0):
                return
            self.stop_sent = True
        if self.status.phase not in ("done", "failed"):
            self._set("stopping", "asked the collector to flush and stop")
        self._delete_pod(grace_s)

    def _delete_pod(self, grace_s: int) -> None:
        self._delete("pod", lambda: self.cluster.core.delete_namespaced_pod(
            self.name, self.namespace, grace_period_seconds=grace_s,
            body=k8s_client.V1DeleteOptions(grace_period_seconds=grace_s,
                                            propagation_policy="Background"),
            _request_timeout=30))

    def _delete(self, kind: str, request: Callable[[], Any]) -> None:
        """Run one delete; already gone is fine, anything else becomes a warning (teardown
        goes on: the other object, and the wait, must still happen)."""
        try:
            request()
        except ApiException as exc:
            if exc.status != 404:
                self.warnings.append(f"could not delete {kind} {self.namespace}/{self.name}: "
                                     f"{status_message(exc)}")
        except Exception as exc:
            self.warnings.append(f"could not delete {kind} {self.namespace}/{self.name}: {exc}")

    def teardown(self, wait_s: float = GRACE_PERIOD_S + 15) -> None:
        """Delete the pod and ConfigMap and wait until the pod is gone (every path)."""
        if self.created_pod:
            with self._lock:
                already = self.stop_sent
                self.stop_sent = True
            if not already:
                # the collector has finished (or failed): no flush to wait for
                self._delete_pod(0 if self._collector_done() else GRACE_PERIOD_S)
        if self.created_cm:
            self._delete("ConfigMap", lambda: self.cluster.core.delete_namespaced_config_map(
                self.name, self.namespace, _request_timeout=30))
        if self.created_pod and not self._wait_gone(wait_s):
            self._delete_pod(0)
            if not self._wait_gone(10):
                self.warnings.append(
                    f"pod {self.namespace}/{self.name} is still terminating; "
                    "`kubectl offwake cleanup` removes it if it stays")
        if self.status.phase not in ("failed",):
            self._set("done", self.status.detail)

    def _collector_done(self) -> bool:
        return pod_state(self.last_pod).kind in ("exited", "failed", "gone") or \
            self.stream.ended

    def _wait_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.cluster.core.read_namespaced_pod(self.name, self.namespace,
                                                      _request_timeout=10)
            except ApiException as exc:
                if exc.status == 404:
                    return True
            except Exception:
                pass
            time.sleep(0.3)
        return False


def _raise(exc: Any) -> None:
    raise exc
