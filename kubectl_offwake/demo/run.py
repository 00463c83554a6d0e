"""The demo from start to finish: set up the node, trace its Envoy, tear everything down."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..analysis.model import Recording
from ..errors import RunFailed, require_root
from ..live import LiveProgress, StepPrinter
from ..pipeline.local import CollectorRun, collector_command, find_collector_python
from ..pipeline.sink import StreamSink
from ..prctl import pin
from .binaries import DemoBinaries
from .mesh import DEMO_NEEDS, DemoMesh, MeshInfo
from .scenarios import Scenario

#: Seconds of load before tracing starts, so connections and caches are warm.
WARMUP_S = 1.0


@dataclass
class DemoResult:
    recording: Recording
    scenario: Scenario
    info: MeshInfo
    interrupted: bool
    cleanup_problems: List[str]


#: What the report calls each of the demo's stand-ins (by the name the demo starts it under).
LABELS = {
    "pilot-agent": "pilot-agent (demo stand-in)",
    "kubelet": "kubelet probe (demo stand-in)",
    "dnsmasq": "dnsmasq (the mesh's DNS)",
    "upstream": "upstream app",
    "wrk": "wrk (load client)",
    "cpu-hog": "cpu-hog (noisy neighbour)",
}


def identity_records(info: MeshInfo) -> List[dict]:
    """Names for the demo's stand-ins (``identity`` records, as the Kubernetes path names
    processes by pod), so the report says what each waker stands for."""
    return [{"type": "identity", "pid": info.pids[name], "label": label}
            for name, label in LABELS.items() if name in info.pids]


def run_demo(duration_s: float, scenario: Scenario, keep_recording: Optional[str] = None,
             steps: Optional[StepPrinter] = None, interval_s: float = 1.0,
             collector_args: Optional[List[str]] = None,
             client: Optional[Dict[str, Any]] = None) -> DemoResult:
    """Set up the scenario's node, trace its Envoy, remove the node; ``collector_args``
    go to the collector as they are, ``client`` is the recording's ``client`` record."""
    require_root(DEMO_NEEDS)
    steps = steps or StepPrinter()
    binaries = DemoBinaries.find()
    python = find_collector_python()
    mesh = DemoMesh(on_step=steps.done, load_seconds=duration_s + WARMUP_S + 60,
                    settings=scenario.settings, binaries=binaries)
    steps.note(f"scenario {scenario.name}: {scenario.summary}")
    with steps.working("setting up the demo node…"):
        info = mesh.__enter__()
    mine = os.sched_getaffinity(0)
    try:
        # The tracer's user side and this process's live display run next to the stand-ins,
        # off Envoy's CPU (the collector inherits this), so that there only the scenario's
        # own neighbours (none, or the hog) compete with Envoy.
        pin(info.other_cpus or None)
        time.sleep(WARMUP_S)
        command = collector_command(python, ["--pid", str(info.envoy_pid)], duration_s,
                                    interval_s, collector_args)
        with LiveProgress(f"tracing envoy (pid {info.envoy_pid})") as live:
            after_hello = ([client] if client else []) + identity_records(info)
            sink = StreamSink("envoy", keep_recording, live, after_hello)
            result = CollectorRun(command, sink, duration_s).run()
    finally:
        pin(mine)
        with steps.working("removing the demo node…"):
            mesh.__exit__(None, None, None)
        for problem in mesh.cleanup_problems:
            steps.note(f"could not remove: {problem}")
    if mesh.cleanup_problems:
        raise RunFailed("the demo could not remove everything it made: "
                        + "; ".join(mesh.cleanup_problems))
    steps.done(f"removed the demo node ({info.netns}, its veth, cgroup, processes and "
               "temporary files)")
    return DemoResult(result.recording, scenario, info, result.interrupted,
                      mesh.cleanup_problems)
