"""``analyze(recording) -> Report``: classify every edge, aggregate, draw findings.

Pure and deterministic: the same recording always gives the same report, in the same
order (wakeups by total off-CPU time, largest first; ties keep the recording's order).
"""

from __future__ import annotations

from typing import List

from . import aggregate
from .categories import CATEGORY_BY_ID
from .classify import Classifier
from .findings import find
from .model import Recording
from .naming import Namer
from .report import Report, Wakeup
from .roles import Roles


def analyze(recording: Recording) -> Report:
    """The report of one recording (DESIGN.md §3.3)."""
    roles = Roles(recording)
    namer = Namer(recording, roles)
    classifier = Classifier()
    wakeups: List[Wakeup] = []
    for edge in recording.edges:
        c = classifier.classify_edge(edge)
        preemption = CATEGORY_BY_ID[c.category].preemption
        waker = None
        if not preemption and edge.waker is not None and (edge.waker.comm or edge.waker.pid):
            waker = namer.party(edge.waker)
        preempted_by = namer.party(edge.preempted_by) if edge.preempted_by is not None else None
        wakeups.append(Wakeup(edge=edge, category=c.category, cause=c.cause, rule=c.rule,
                              target=namer.party(edge.target), waker=waker,
                              preempted_by=preempted_by, detail=c.detail))
    wakeups.sort(key=lambda w: -w.edge.total_us)
    threads = aggregate.by_thread(recording, wakeups, namer, 0)
    totals = aggregate.totals(recording, wakeups, threads=len(threads))
    grand = totals.off_cpu_us
    for thread in threads:
        for group in thread.by_category:
            group.share = aggregate.share(group.total_us, grand)
    report = Report(
        source=dict(recording.source),
        totals=totals,
        wakeups=wakeups,
        by_category=aggregate.by_category(wakeups, grand),
        by_waker=aggregate.by_waker(wakeups, grand, namer),
        by_thread=threads,
        findings=[],
        pending=list(recording.pending),
        throttling=list(recording.throttling),
        warnings=list(recording.warnings),
    )
    report.findings = find(recording, report, namer)
    return report
