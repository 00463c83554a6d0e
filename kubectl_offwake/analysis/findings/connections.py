"""New connections and the workers they wake: the accept thundering herd.

The evidence today is how evenly the workers' accept wakeups are spread, which per-worker
listeners (``reuse_port``, what Envoy opens on Linux by default) produce too, without any
herd. The fact to rest on instead is wakeups per accepted connection: more than one means
a connection woke workers that did not get it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

from ..report import WARNING, Finding, Wakeup
from ..roles import WORKER
from .context import Context, Process, thread_id
from .evidence import ACCEPT, counts

#: Accept herd: at least this many workers woken by new connections (a herd needs two) ...
HERD_MIN_WORKERS = 2
#: ... each at least this often: over fewer connections an even spread is chance ...
HERD_MIN_WAKES_PER_WORKER = 10
#: ... and evenly (fewest / most at least this), as when every connection wakes every
#: waiting worker and their counts come out nearly equal; connections hashed over
#: per-worker listeners were taken to come out less even on small counts.
HERD_BALANCE = 0.8


def accept_herd(ctx: Context, proc: Process) -> Optional[Finding]:
    """New connections waking several workers evenly: each connection wakes them all.

    A heuristic: with one shared listener and no EPOLLEXCLUSIVE every waiting worker is
    woken per connection, so their accept wakeup counts are nearly equal.
    """
    per: Dict[object, List[Wakeup]] = defaultdict(list)
    for w in proc.woken(ACCEPT, WORKER):
        per[thread_id(w.target)].append(w)
    by_worker = {k: counts(v) for k, v in per.items()}
    if len(by_worker) < HERD_MIN_WORKERS or any(c is None for c in by_worker.values()):
        return None
    values = [c for c in by_worker.values() if c is not None]
    fewest, most = min(values), max(values)
    if fewest < HERD_MIN_WAKES_PER_WORKER or fewest / most < HERD_BALANCE:
        return None
    comms = sorted(per[k][0].target.comm for k in per)
    return Finding(
        id="accept-herd", severity=WARNING, title="Accept thundering herd",
        text=(f"New connections woke {len(values)} workers{ctx.where(proc)} almost equally "
              f"often ({fewest}–{most} accept wakeups each): each connection wakes every "
              "waiting worker and only one accepts it. Per-worker listeners (reuse_port) or "
              "exact connection balancing avoid it."),
        evidence={"workers": comms,
                  "accept_wakeups": {per[k][0].target.comm: c for k, c in by_worker.items()},
                  "balance": round(fewest / most, 3)})
