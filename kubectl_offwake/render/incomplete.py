"""How every format says that a trace is incomplete, or empty.

A collector that failed (``Report.failures``) leaves a report of what arrived before, and a
trace that recorded nothing leaves a report with nothing in it: neither may read as "all
clear". Renderers show :func:`lines` at the top and, when there are no findings, the
sentence of :func:`why_no_findings` instead of their "nothing stands out".
"""

from __future__ import annotations

from typing import Dict, List, Optional

from ..analysis.report import Report


def lines(report: Report) -> List[str]:
    """One line per failed source, for the top of a report; none for a complete trace."""
    return [f"Incomplete: {sentence}" for sentence in report.failures.values()]


def why_no_findings(report: Report) -> Optional[str]:
    """Why an empty findings list means nothing here; None when it means "all clear"."""
    if report.failures:
        return ("None in what was collected, but the trace is incomplete (see above): "
                "the absence of findings says nothing about the target.")
    if not report.wakeups and not report.pending:
        return ("Nothing to judge: no off-CPU time was recorded for the target threads, "
                "so the absence of findings says nothing about them.")
    return None


def source_fields(report: Report) -> Dict[str, object]:
    """What the JSON report adds to ``source``: ``complete``, and ``failures`` (one
    ``{source, reason}`` per failed source) — docs/report-json.md."""
    return {"complete": not report.failures,
            "failures": [{"source": source, "reason": reason}
                         for source, reason in report.failures.items()]}
