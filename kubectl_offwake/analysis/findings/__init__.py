"""Findings: plain sentences an on-call engineer can act on, with the numbers behind them.

Each detector looks for the trace signature of one problem real meshes have and says
nothing unless its evidence is present: rates need counts and the trace's duration (BCC
imports have no counts), throttling needs the cgroup counters, a noisy neighbour needs the
collector to name who held the CPU. Where Envoy's own counters can confirm a finding
(:mod:`..envoy_counts`: connections for the herd, resolutions for a DNS storm, updates for
xDS churn, watchdog misses for a stall) the detector rests on them, and says so; without
them it says what it rests on instead, or stays silent when the trace alone would be a
guess. The detectors live by family, each threshold beside the detector that uses it with
the reason for its value:

* ``cpu``          -- ready to run without a CPU: CFS throttling, a noisy neighbour
* ``oncpu``        -- holding the CPU: a hot worker, event-loop stalls
* ``control``      -- the main thread's control-plane traffic: DNS storms, xDS churn
* ``threads``      -- Envoy's threads waking each other: posts, main-thread locks, access log
* ``connections``  -- new connections waking workers: the accept herd
* ``health``       -- the whole report: threads stuck at the end, a dominant waker, losses

``context`` groups the report per traced process once (a detector checks one process and
the package runs it over all of them); ``evidence`` and ``wording`` are what detectors
share for reading wakeups and writing sentences. The findings' shape is
:class:`~kubectl_offwake.analysis.report.Finding`, serialised as ``findings[]`` in the JSON
report (docs/report-json.md); their ids and evidence keys are part of that interface.

A new detector is a function of ``(Context, Process)`` (or of the ``Context`` alone, for
the whole report) returning at most one finding, in its family's module below the
thresholds it uses, each with a ``#:`` line saying why that value; it is listed in
:data:`DETECTORS`, gets a row in docs/report-json.md (a test compares the two) and a test
at each threshold's edge (``tests/unit/test_findings_<family>.py``).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from ..aggregate import Index, index
from ..model import Recording
from ..naming import Namer
from ..report import SEVERITIES, Finding, Report
from . import connections, control, cpu, health, oncpu, threads
from .context import Detector, build, each_process, once

#: Every detector, in the order findings of one severity are listed.
DETECTORS: Tuple[Detector, ...] = (
    each_process(cpu.cpu_shortage),
    each_process(control.dns_storm),
    each_process(control.xds_churn),
    each_process(threads.cross_thread_posts),
    each_process(threads.main_lock),
    each_process(threads.access_log_flush),
    each_process(connections.accept_herd),
    each_process(oncpu.hot_worker),
    each_process(oncpu.event_loop_stall),
    once(health.still_off_cpu),
    once(health.dominant_waker),
    once(health.losses),
)

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


def find(recording: Recording, report: Report, namer: Namer,
         idx: Optional[Index] = None) -> List[Finding]:
    """Every finding the recording supports, most severe first."""
    ctx = build(recording, report, namer, idx if idx is not None else index(report.wakeups))
    found: List[Finding] = []
    for detector in DETECTORS:
        found.extend(detector(ctx))
    found.sort(key=lambda f: _RANK.get(f.severity, len(_RANK)))
    return found


__all__ = ["DETECTORS", "find"]
