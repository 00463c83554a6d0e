"""``kubectl offwake TARGET``, start to finish: the one place the steps are put in order.

config → preflight (read) → resolve → [--dry-run: print, stop] → preflight (create) →
collector image chosen (flag, environment, the cluster's offwake-config, default) → run
the fleet with live progress, Ctrl-C = graceful stop → every pod gone → recordings saved →
reports (merged, and one per pod for a fleet) → exit 1 naming every node whose collector
failed (its report marked incomplete).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..errors import EXIT_FAILED, EXIT_OK, RunFailed, UserError, say
from . import clusterimage, preflight
from .api import Cluster
from .config import load as load_config
from .fleet import Fleet, FleetOptions, plan
from .image import ImageChoice, choose, needs_cluster
from .podspec import (
    DEFAULT_COLLECTOR_NAMESPACE,
    DEFAULT_INTERVAL_S,
    collector_configmap,
    manifests_yaml,
    new_run_id,
    node_pod,
    zipapp_sha256,
)
from .recordings import merge, recording_paths, report_path, save_lines, split_by_pod
from .resolve import DEFAULT_MAX_PODS, resolve
from .targets import parse_target

EXIT_INTERRUPTED = 130


@dataclass
class TraceRequest:
    target: Optional[str]
    namespace: Optional[str] = None
    container: Optional[str] = None
    selector: Optional[str] = None
    duration_s: float = 30.0
    fmt: Optional[str] = None
    out: Optional[str] = None
    context: Optional[str] = None
    kubeconfig: Optional[str] = None
    image: Optional[str] = None  # --image; else $OFFWAKE_IMAGE, the cluster's, the default
    collector_namespace: str = DEFAULT_COLLECTOR_NAMESPACE
    dry_run: bool = False
    max_pods: int = DEFAULT_MAX_PODS
    save: Optional[str] = None
    interval_s: float = DEFAULT_INTERVAL_S
    notes: List[str] = field(default_factory=list)


def load_zipapp() -> bytes:
    """The collector, built from this very installation (never another version)."""
    try:
        from ..collector.bundle import build_zipapp
    except ImportError as exc:
        raise RunFailed(f"this installation has no collector bundle ({exc}); "
                        "reinstall kubectl-offwake") from None
    return build_zipapp()


def run_trace(req: TraceRequest) -> int:
    """Run (or dry-run) a trace; returns the exit code. Raises UserError for failures."""
    spec = parse_target(req.target) if req.target else None
    config = load_config(req.kubeconfig, req.context, req.namespace)
    cluster = Cluster(config)
    namespace = config.namespace
    for warning in preflight.require(
            cluster, preflight.resolve_permissions(namespace, spec.kind if spec else None)):
        say(f"warning: {warning}")
    resolution = resolve(cluster, req.target, namespace, req.container, req.selector,
                         req.max_pods)
    for skipped in resolution.skipped:
        say(f"skipping {skipped}")
    targets = resolution.targets
    run_id = new_run_id()
    zipapp = load_zipapp()
    if req.dry_run:
        return _dry_run(cluster, targets, req, run_id, zipapp)
    warnings = preflight.require(cluster, preflight.run_permissions(req.collector_namespace))
    for warning in warnings:
        say(f"warning: {warning}")
    choice = clusterimage.image_choice(cluster, req.collector_namespace, req.image, os.environ)
    options = _fleet_options(req, run_id, choice, zipapp)
    nodes = sorted({t.node for t in targets})
    say(f"collector image: {choice.image} ({choice.describe()})")
    say(f"tracing {len(targets)} container(s) on {len(nodes)} node(s) for "
         f"{req.duration_s:g}s (run {run_id}): " + ", ".join(t.label() for t in targets))
    fleet, interrupted = _run_fleet(cluster, targets, options, zipapp, choice,
                                    name_all=not any("all namespaces" in w for w in warnings))
    return _finish(req, fleet, run_id, interrupted)


def _fleet_options(req: TraceRequest, run_id: str, choice: ImageChoice,
                   zipapp: bytes) -> FleetOptions:
    return FleetOptions(
        run_id=run_id, collector_namespace=req.collector_namespace, image=choice.image,
        collector_sha256=zipapp_sha256(zipapp), duration_s=req.duration_s,
        interval_s=req.interval_s,
    )


def _dry_run(cluster: Cluster, targets: List[Any], req: TraceRequest, run_id: str,
             zipapp: bytes) -> int:
    missing = preflight.check(cluster, preflight.run_permissions(req.collector_namespace))
    stored: Optional[str] = None
    unread = ""
    if needs_cluster(req.image, os.environ):
        if preflight.image_permission(req.collector_namespace) in missing:
            unread = " (the cluster's choice could not be read: see the notes)"
        else:
            stored = clusterimage.read(cluster, req.collector_namespace)
    choice = choose(req.image, os.environ, stored, req.collector_namespace)
    options = _fleet_options(req, run_id, choice, zipapp)
    objects: List[dict] = []
    for opts in plan(targets, options):
        # The pod first: it is what a reader checks; the ConfigMap after it is mostly the
        # collector zipapp in base64.
        objects.append(node_pod(opts))
        objects.append(collector_configmap(opts, zipapp))
    header = ["# kubectl offwake --dry-run: nothing was created.",
              f"# targets: {', '.join(t.label() for t in targets)}",
              f"# collector image: {choice.image} ({choice.describe()}){unread}",
              f"# collector zipapp sha256: {options.collector_sha256} (the pod's command "
              "checks it before running the zipapp)"]
    for perm in missing:
        header.append(f"# note: you may not {perm.describe()}"
                      + (" (optional)" if perm.optional else ""))
    sys.stdout.write("\n".join(header) + "\n" + manifests_yaml(objects))
    sys.stdout.flush()
    return EXIT_OK


class _Stopper:
    """Signal handling: the first Ctrl-C stops gracefully, the second forcibly."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.count = 0
        self.event = threading.Event()
        self._old: Dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):
                continue

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError, TypeError):
                pass
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.event.set()
        if self.count == 1:
            say("stopping: the collectors flush what they have (Ctrl-C again to force)")
            self.fleet.request_stop(force=False)
        else:
            say("forcing the collectors to stop")
            self.fleet.request_stop(force=True)


_STATUS_WORDS = {"creating": "creating", "pending": "starting", "running": "starting",
                 "streaming": "tracing", "stopping": "stopping", "done": "done",
                 "failed": "failed"}


_STEP_WORDS = {"pending": "collector pod created, starting",
               "running": "collector running", "streaming": "collector tracing",
               "stopping": "stopping the collector", "done": "collector pod removed",
               "failed": "failed"}


def _run_fleet(cluster: Cluster, targets: List[Any], options: FleetOptions, zipapp: bytes,
               choice: ImageChoice, name_all: bool) -> tuple[Fleet, bool]:
    from ..live import LiveProgress

    live = LiveProgress(f"kubectl offwake · collector image {choice.image} "
                        f"({choice.describe()})")
    lock = threading.Lock()

    def on_record(run: Any, record: dict) -> None:
        with lock:
            live.feed(run.opts.node, record)

    said: Dict[str, str] = {}

    def on_update(run: Any) -> None:
        phase = run.status.phase
        if not live.live_enabled and said.get(run.opts.node) != phase:
            # not a terminal: one line per step, so logs and CI show where a run got to
            said[run.opts.node] = phase
            say(f"{run.opts.node}: {_STEP_WORDS.get(phase, phase)} "
                 f"({run.namespace}/{run.name})")
        status = _STATUS_WORDS.get(run.status.phase, run.status.phase)
        # a pending pod's reason (ContainerCreating...) or a failure; "" clears it
        message = run.status.detail if run.status.phase in ("failed", "pending") else ""
        with lock:
            live.set_status(run.opts.node, status, message)

    fleet = Fleet(cluster, targets, options, zipapp, on_update=on_update, on_record=on_record,
                  name_all_namespaces=name_all)
    stopper = _Stopper(fleet)
    for run in fleet.runs:
        live.add_source(run.opts.node, options.duration_s)
    stopper.install()
    try:
        live.__enter__()
        fleet.start()
        while not fleet.finished:
            time.sleep(0.2)
    finally:
        try:
            fleet.close()
        finally:
            for run in fleet.runs:
                if run.opts.node in fleet.errors:
                    live.set_status(run.opts.node, "failed", None)
            live.close()
            stopper.restore()
    return fleet, stopper.count > 0


def _finish(req: TraceRequest, fleet: Fleet, run_id: str, interrupted: bool) -> int:
    """Save recordings, print reports, name every failed node; return the exit code.

    A node whose collector failed makes the run fail (exit 1), whatever the other nodes
    collected; what did arrive is saved and reported, and the report says it is incomplete
    and why (``Recording.failures``, which the saved recordings carry too).
    """
    from ..importers import parse_wire

    for run in fleet.runs:
        for warning in run.warnings:
            say(f"warning: {warning}")
    with_data = [run for run in fleet.runs if run.follower.decoder.saw_hello]
    nodes = [run.opts.node for run in with_data]
    base = req.save or f"offwake-{run_id}.jsonl.gz"
    paths = recording_paths(base, nodes) if nodes else {}
    recordings = []
    for run in with_data:
        lines = fleet.lines(run)
        path = paths[run.opts.node]
        try:
            save_lines(path, lines)
            say(f"recording saved: {path} (kubectl offwake report {path})")
        except OSError as exc:
            say(f"warning: cannot save the recording to {path}: {exc.strerror}; "
                 "pass --save with a writable path")
        recordings.append(parse_wire("\n".join(lines) + "\n", path))
    silent = {node: text for node, text in fleet.errors.items() if node not in nodes}
    if not recordings and interrupted and not silent:
        say("stopped before the collector sent anything; nothing was collected "
             "(the collector pods are removed)")
        return EXIT_INTERRUPTED
    merged = merge(recordings, nodes) if recordings else None
    failures = dict(merged.failures) if merged is not None else {}
    failures.update(silent)  # nodes whose collector never sent a word
    if merged is None or not merged.has_data:
        raise RunFailed("; ".join(_failure_lines(failures, len(fleet.runs))) or
                        "the collector sent nothing; nothing was collected")
    merged.failures = failures
    _write_reports(req, recordings, merged, nodes, run_id)
    if not failures:
        return EXIT_OK
    for line in _failure_lines(failures, len(fleet.runs)):
        say(f"error: {line}")
    say("the report shows what was collected, marked incomplete")
    return EXIT_FAILED


def _failure_lines(failures: Dict[str, str], nodes: int) -> List[str]:
    """One line per failed node; in a run over several nodes each starts with its node."""
    return [text if nodes == 1 else f"node {node}: {text}" for node, text in failures.items()]


def _write_reports(req: TraceRequest, recordings: List[Any], merged: Any, nodes: List[str],
                   run_id: str) -> None:
    from ..analysis import analyze
    from ..render import RenderOptions, guess_format, write_report

    fmt = req.fmt or guess_format(req.out)
    per_pod: Dict[str, Any] = {}
    for recording in recordings:
        per_pod.update(split_by_pod(recording))
    for warning in merged.warnings:
        say(f"warning: {warning}")
    if len(per_pod) > 1:
        suffix = {"table": ".txt", "json": ".json", "folded": ".folded",
                  "speedscope": ".speedscope.json", "svg": ".svg", "html": ".html"}[fmt]
        base = req.out if req.out and req.out != "-" else f"offwake-{run_id}{suffix}"
        for pod, recording in per_pod.items():
            path = report_path(base, pod)
            write_report(analyze(recording), fmt, path, RenderOptions(title=f"{pod}"))
            say(f"report for {pod}: {path}")
    if len(per_pod) == 1:
        title = f"kubectl offwake: {next(iter(per_pod))}"
    elif per_pod:
        title = f"kubectl offwake: {len(per_pod)} pods on {len(nodes)} node(s)"
    else:
        title = "kubectl offwake"
    write_report(analyze(merged), fmt, req.out, RenderOptions(title=title))
    if req.out and req.out != "-":
        say(f"report written: {req.out}")


def guard(fn: Callable[[], int]) -> int:
    """Run ``fn``; a UserError passes through, anything else is a bug, said plainly."""
    try:
        return fn()
    except UserError:
        raise
    except KeyboardInterrupt:  # before any collector pod existed
        say("interrupted; nothing was created")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("OFFWAKE_DEBUG"):
            raise
        raise RunFailed(f"unexpected error ({type(exc).__name__}: {exc}); "
                        "rerun with OFFWAKE_DEBUG=1 for details") from None
