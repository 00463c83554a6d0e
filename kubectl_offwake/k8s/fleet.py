"""A run over one or more nodes: one collector per node, all at once, all cleaned up.

Each node is driven by its own thread (create → watch → follow → name → teardown), so a
slow image pull on one node does not hold the others back. Each node's log goes to the
stream the caller made for it (:class:`~.noderun.NodeStream`), and the naming step adds
the node's ``identity`` records to that stream. The caller's thread keeps the signals:
:meth:`Fleet.request_stop` asks every collector to flush and stop, and :meth:`Fleet.close`
makes sure every pod and ConfigMap is gone whatever happened.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ..errors import RunFailed
from .api import Cluster, get_json
from .naming import identities
from .noderun import NodeRun, NodeStream
from .podspec import GRACE_PERIOD_S, NodePodOptions
from .targets import ResolvedTarget, group_by_node


@dataclass
class FleetOptions:
    run_id: str
    collector_namespace: str
    image: str
    collector_sha256: str
    duration_s: float
    interval_s: float
    collector_args: List[str] = field(default_factory=list)


def plan(targets: List[ResolvedTarget], options: FleetOptions) -> List[NodePodOptions]:
    """The node pods a run creates: one per node, carrying that node's targets."""
    return [
        NodePodOptions(
            run_id=options.run_id, node=node, namespace=options.collector_namespace,
            image=options.image, collector_sha256=options.collector_sha256,
            duration_s=options.duration_s,
            interval_s=options.interval_s, targets=node_targets,
            collector_args=list(options.collector_args),
        )
        for node, node_targets in group_by_node(targets).items()
    ]


class Fleet:
    """Runs the node collectors in parallel; stop and close are safe from any thread."""

    def __init__(self, cluster: Cluster, targets: List[ResolvedTarget], options: FleetOptions,
                 zipapp: bytes, streams: Dict[str, NodeStream],
                 on_update: Optional[Callable[[NodeRun], None]] = None,
                 name_all_namespaces: bool = True) -> None:
        """``streams``: node name → where that node's stream goes, for every node of
        :func:`plan`."""
        self.cluster = cluster
        self.targets = targets
        self.options = options
        self.runs: List[NodeRun] = [NodeRun(cluster, opts, zipapp, streams[opts.node], on_update)
                                    for opts in plan(targets, options)]
        self.errors: Dict[str, str] = {}
        self.name_all_namespaces = name_all_namespaces
        self._threads: List[threading.Thread] = []
        self._done: Dict[str, bool] = {}
        self._closed = False

    def start(self) -> None:
        for run in self.runs:
            thread = threading.Thread(target=self._drive, args=(run,), daemon=True,
                                      name=f"offwake-{run.opts.node}")
            self._threads.append(thread)
            thread.start()

    def _drive(self, run: NodeRun) -> None:
        node = run.opts.node
        try:
            if run.stop_requested.is_set():
                return
            run.create()
            if run.stop_requested.is_set():
                run.request_stop(0)
            state = run.wait_started()
            if state.kind != "gone":
                reason = run.follow()
                error = run.outcome_error(reason)
                if error:
                    self.errors[node] = error
                self._name(run)
        except RunFailed as exc:
            self.errors[node] = str(exc)
            run.failure = str(exc)
            run.status.phase = "failed"
            run.status.detail = str(exc)
        except Exception as exc:  # never leave a pod behind because of a bug
            self.errors[node] = f"{type(exc).__name__}: {exc}"
            run.failure = self.errors[node]
            run.status.phase = "failed"
        finally:
            try:
                run.teardown()
            finally:
                self._done[node] = True

    def _name(self, run: NodeRun) -> None:
        """``identity`` records for every process the collector saw on this node."""
        processes = list(run.stream.recording.processes.values())
        if not processes:
            return
        for record in identities(processes, self._pods_on(run.opts.node), run.opts.node):
            run.stream.add_client_record(record)

    def _pods_on(self, node: str) -> List[dict]:
        selector = f"spec.nodeName={node}"
        core = self.cluster.core
        if self.name_all_namespaces:
            try:
                data = get_json("list pods on the node", core.list_pod_for_all_namespaces,
                                field_selector=selector, server=self.cluster.config.server)
                return list(data.get("items") or [])
            except Exception:
                pass
        pods: List[dict] = []
        for ns in sorted({t.namespace for t in self.targets}):
            try:
                data = get_json("list pods on the node", core.list_namespaced_pod, ns,
                                field_selector=selector, server=self.cluster.config.server)
                pods.extend(data.get("items") or [])
            except Exception:
                continue
        return pods

    @property
    def finished(self) -> bool:
        return all(self._done.get(run.opts.node) for run in self.runs)

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return self.finished

    def request_stop(self, force: bool = False) -> None:
        """Graceful: SIGTERM via a pod delete with a grace period. Forced: grace 0."""
        grace = 0 if force else GRACE_PERIOD_S
        for run in self.runs:
            threading.Thread(target=run.request_stop, args=(grace,), daemon=True).start()

    def close(self, timeout: float = GRACE_PERIOD_S + 30) -> None:
        """Every pod and ConfigMap gone, even when a node thread is stuck or never ran."""
        if self._closed:
            return
        self._closed = True
        if not self.wait(timeout):
            for run in self.runs:
                if not self._done.get(run.opts.node):
                    run.request_stop(0)
                    run.teardown(wait_s=10)
