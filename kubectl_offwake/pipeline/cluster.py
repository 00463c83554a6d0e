"""``kubectl offwake TARGET`` start to finish: the API's steps, then one sink per node.

:func:`kubectl_offwake.k8s.session.prepare` resolves TARGET and checks what the run needs;
here every node gets a :class:`~.sink.StreamSink` (its recording file, its row of the live
display), the fleet streams each node's log into its sink, :mod:`.interrupt` turns Ctrl-C
into a graceful stop (then a forced one), every pod is removed, and the recordings become
reports: one merged, and one per pod when there are several. A node whose collector failed
fails the run (exit 1, naming it), and its report says it is incomplete and why.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List

from ..analysis import analyze
from ..analysis.model import Recording
from ..analysis.recordings import merge, split_by_pod
from ..errors import EXIT_FAILED, EXIT_OK, RunFailed, UserError, say
from ..k8s.fleet import Fleet
from ..k8s.noderun import NodeRun, NodeStream
from ..k8s.session import PreparedRun, TraceRequest, prepare
from ..live import LiveProgress
from ..render import FORMAT_SUFFIXES, RenderOptions, guess_format, write_report
from .interrupt import Interruptions
from .paths import recording_paths, report_path
from .sink import StreamSink

EXIT_INTERRUPTED = 130

_STATUS_WORDS = {"creating": "creating", "pending": "starting", "running": "starting",
                 "streaming": "tracing", "stopping": "stopping", "done": "done",
                 "failed": "failed"}
_STEP_WORDS = {"pending": "collector pod created, starting",
               "running": "collector running", "streaming": "collector tracing",
               "stopping": "stopping the collector", "done": "collector pod removed",
               "failed": "failed"}


def run_trace(req: TraceRequest) -> int:
    """Run (or dry-run) a trace; returns the exit code. Raises UserError for failures."""
    prepared = prepare(req)
    if prepared is None:
        return EXIT_OK  # --dry-run: printed, nothing created
    choice = prepared.choice
    say(f"collector image: {choice.image} ({choice.describe()})")
    say(f"tracing {len(prepared.targets)} container(s) on {len(prepared.nodes)} node(s) for "
        f"{req.duration_s:g}s (run {prepared.run_id}): "
        + ", ".join(t.label() for t in prepared.targets))
    display = LiveProgress(f"kubectl offwake · collector image {choice.image} "
                           f"({choice.describe()})")
    paths = recording_paths(req.save or f"offwake-{prepared.run_id}.jsonl.gz", prepared.nodes)
    sinks: Dict[str, StreamSink] = {}
    try:
        for node in prepared.nodes:  # every file opened before any pod exists
            sinks[node] = StreamSink(node, paths[node], display, req.client_records)
        fleet, interrupted = _run_fleet(prepared, sinks, display)
        return _finish(req, fleet, sinks, prepared.run_id, interrupted)
    finally:
        for sink in sinks.values():
            sink.close()  # again after _finish: a no-op; on an error, what came is kept


def _run_fleet(prepared: PreparedRun, sinks: Dict[str, StreamSink],
               display: LiveProgress) -> tuple[Fleet, bool]:
    said: Dict[str, str] = {}

    def on_update(run: NodeRun) -> None:
        phase = run.status.phase
        if not display.live_enabled and said.get(run.opts.node) != phase:
            # not a terminal: one line per step, so logs and CI show where a run got to
            said[run.opts.node] = phase
            say(f"{run.opts.node}: {_STEP_WORDS.get(phase, phase)} "
                f"({run.namespace}/{run.name})")
        status = _STATUS_WORDS.get(phase, phase)
        # a pending pod's reason (ContainerCreating...) or a failure; "" clears it
        message = run.status.detail if phase in ("failed", "pending") else ""
        display.set_status(run.opts.node, status, message)

    streams: Dict[str, NodeStream] = dict(sinks)
    fleet = Fleet(prepared.cluster, prepared.targets, prepared.options, prepared.zipapp,
                  streams, on_update=on_update,
                  name_all_namespaces=prepared.name_all_namespaces)
    for node in prepared.nodes:
        display.add_source(node, prepared.options.duration_s)
    interruptions = Interruptions(lambda force: fleet.request_stop(force=force),
                                  display.notice)
    try:
        with interruptions:
            display.__enter__()
            fleet.start()
            while not fleet.finished:
                time.sleep(0.2)
    finally:
        try:
            fleet.close()
        finally:
            for node in fleet.errors:
                display.set_status(node, "failed")
            display.close()
    return fleet, interruptions.interrupted


def _finish(req: TraceRequest, fleet: Fleet, sinks: Dict[str, StreamSink], run_id: str,
            interrupted: bool) -> int:
    """Close the recordings, print the reports, name every failed node; the exit code.

    A node whose collector failed makes the run fail (exit 1), whatever the other nodes
    collected; what did arrive is saved and reported, and the report says it is incomplete
    and why (``Recording.failures``, which the saved recordings carry too).
    """
    for run in fleet.runs:
        for warning in run.warnings:
            say(f"warning: {warning}")
    recordings: List[Recording] = []
    nodes: List[str] = []
    for node, sink in sinks.items():
        if sink.saw_hello and node in fleet.errors:
            sink.add_failure(node, fleet.errors[node])
        sink.close()
        if sink.saw_hello:
            nodes.append(node)
            recordings.append(sink.finish())
            say(f"recording saved: {sink.save_path} (kubectl offwake report {sink.save_path})")
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


def _write_reports(req: TraceRequest, recordings: List[Recording], merged: Recording,
                   nodes: List[str], run_id: str) -> None:
    fmt = req.fmt or guess_format(req.out)
    per_pod: Dict[str, Recording] = {}
    for recording in recordings:
        per_pod.update(split_by_pod(recording))
    for warning in merged.warnings:
        say(f"warning: {warning}")
    if len(per_pod) > 1:
        base = req.out if req.out and req.out != "-" else \
            f"offwake-{run_id}{FORMAT_SUFFIXES[fmt]}"
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
