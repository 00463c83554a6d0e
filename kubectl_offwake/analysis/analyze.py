"""``analyze(recording) -> Report``: classify every edge, aggregate, draw findings.

Pure and deterministic: the same recording always gives the same report, in the same
order (wakeups by total off-CPU time, largest first; ties keep the recording's order).
"""

from __future__ import annotations

from typing import Dict, List

from ..gcpause import gc_paused
from . import aggregate
from .categories import CATEGORIES
from .classify import Classifier
from .envoy_counts import envoy_sides
from .findings import find
from .model import Recording, Task
from .naming import Namer
from .report import Party, Report, Wakeup
from .roles import Roles
from .runqueue import holders


def analyze(recording: Recording) -> Report:
    """The report of one recording (docs/design.md §3.3)."""
    with gc_paused():
        return _analyze(recording)


def _analyze(recording: Recording) -> Report:
    roles = Roles(recording)
    namer = Namer(recording, roles)
    classifier = Classifier()
    preemptions = frozenset(c.id for c in CATEGORIES if c.preemption)
    # Importers intern tasks, so most lookups hit this identity memo (the edges keep the
    # tasks alive, so ids stay unique); Namer's own memo covers tasks that are not shared.
    parties: Dict[int, Party] = {}

    def party(task: Task) -> Party:
        found = parties.get(id(task))
        if found is None:
            found = parties[id(task)] = namer.party(task)
        return found

    wakeups: List[Wakeup] = []
    append = wakeups.append
    classify = classifier.classify
    for edge in recording.edges:
        w = edge.waker
        if w is None:
            c = classify(edge.waker_stack, edge.target_stack, edge.preempted, False)
        else:
            c = classify(edge.waker_stack, edge.target_stack, edge.preempted,
                         bool(w.comm or w.pid or w.tid), w.comm)
        waker = None
        if w is not None and c.category not in preemptions and (w.comm or w.pid or w.tid):
            waker = party(w)
        pb = edge.preempted_by
        append(Wakeup(edge, c.category, c.cause, c.rule, party(edge.target), waker,
                      party(pb) if pb is not None else None, c.detail))
    wakeups.sort(key=lambda w: -w.edge.total_us)
    sums = aggregate.aggregate(recording, wakeups, namer)
    report = Report(
        source=dict(recording.source),
        totals=sums.totals,
        wakeups=wakeups,
        by_category=sums.by_category,
        by_waker=sums.by_waker,
        by_thread=sums.by_thread,
        findings=[],
        pending=list(recording.pending),
        throttling=list(recording.throttling),
        envoy_stats=list(recording.envoy_stats),
        envoy=envoy_sides(recording, wakeups),
        holders=holders(recording, namer),
        warnings=list(recording.warnings),
        failures=dict(recording.failures),
    )
    report.findings = find(recording, report, namer, sums.index)
    return report
