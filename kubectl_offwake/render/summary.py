"""What a report is about, in words every renderer shows the same way.

The Report carries the recording's ``source`` map (whatever the input said: hello fields
of a recording, the banner of BCC output) and the target threads; these helpers turn both
into the short phrases of a report's header.
"""

from __future__ import annotations

from typing import Dict, List

from ..analysis.report import Report
from ..units import fmt_seconds, fmt_timestamp

#: How many bare thread names a header lists before "and N more".
MAX_BARE = 4
#: ``source["kind"]`` values that deserve a word in the header (our own recordings don't).
_KIND_WORDS = {
    "offwaketime-text": "BCC offwaketime output",
    "offwaketime-folded": "BCC offwaketime -f output",
}


def target_names(report: Report) -> List[str]:
    """The traced processes, ``name (pid N)``, in order of first appearance.

    Derived from the target threads, so imports of BCC output (which name no pod) still
    say which comm was traced.
    """
    names: List[str] = []
    seen = set()
    bare: List[str] = []  # threads of no known process (BCC output names only comms)
    for thread in report.by_thread:
        party = thread.target
        if party.pid is None:
            if party.name not in bare:
                bare.append(party.name)
            continue
        label = f"{party.name} (pid {party.pid})"
        if label not in seen:
            seen.add(label)
            names.append(label)
    if bare:
        shown = ", ".join(bare[:MAX_BARE])
        more = f" and {len(bare) - MAX_BARE} more" if len(bare) > MAX_BARE else ""
        names.append(f"threads {shown}{more}")
    if not names and report.source.get("target"):
        names.append(str(report.source["target"]))
    return names


def source_facts(source: Dict[str, object]) -> List[str]:
    """The "how long, when, on what" phrases, from whichever keys the source has."""
    facts: List[str] = []
    duration = source.get("elapsed_s", source.get("duration_s"))
    started = fmt_timestamp(source.get("started"))
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        facts.append(f"traced {fmt_seconds(duration)}" + (f" from {started}" if started else ""))
    elif started:
        facts.append(f"started {started}")
    reason = source.get("end_reason")
    if reason and reason != "duration":
        facts.append(f"stopped by {reason}")
    if source.get("node"):
        facts.append(f"node {source['node']}")
    if source.get("kernel"):
        facts.append(f"kernel {source['kernel']}")
    if source.get("bcc_version"):
        facts.append(f"BCC {source['bcc_version']}")
    headers = source.get("headers")
    if isinstance(headers, dict) and headers.get("source"):
        facts.append(f"headers: {headers['source']}")
    kind = source.get("kind")
    if isinstance(kind, str) and kind in _KIND_WORDS:
        facts.append(_KIND_WORDS[kind])
    name = source.get("input")
    if name:
        facts.append(f"from {name}")
    return facts
