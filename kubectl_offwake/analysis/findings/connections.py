"""New connections and the workers they wake: the accept thundering herd.

A herd is more accept wakeups than connections: with one listening socket shared by the
workers (and no EPOLLEXCLUSIVE, as Envoy's event loop polls), each new connection wakes
every worker waiting on it and only one accepts. With a socket per worker
(``enable_reuse_port``, Envoy's default on Linux) the kernel hands each connection to one
socket and wakes at most that worker. How evenly the workers were woken says nothing
about which: per-worker sockets spread connections evenly too.

So the finding rests on Envoy's own count of accepted connections
(``listener.*.downstream_cx_total``, and per worker), compared with the accept wakeups of
the workers. When Envoy's admin could not be read it rests on the listening sockets the
collector counted in ``/proc`` instead: a traffic listener with one socket that several
woken workers share. With neither (BCC imports) there is no finding.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from ..envoy_counts import EnvoyCounts
from ..report import WARNING, Finding, Wakeup
from ..roles import WORKER
from .context import Context, Process, thread_id
from .evidence import ACCEPT, counts, without_counters

#: A herd needs at least this many workers woken by new connections.
HERD_MIN_WORKERS = 2
#: Accept wakeups per connection Envoy accepted from which connections wake workers that
#: do not get them. A socket per worker gives at most one wake per connection (fewer when
#: the worker was busy and did not sleep); a shared socket with N idle workers gives up to
#: N (measured: 1.0 on per-worker sockets, 2.0 on a shared one with 2 workers). 1.3 is
#: three wasted wakes in ten connections, clear of both.
HERD_WAKES_PER_CONNECTION = 1.3
#: ... over at least this many connections: over fewer, one burst tips the ratio.
HERD_MIN_CONNECTIONS = 20
#: Without Envoy's counters: at least this many accept wakeups of the workers sharing a
#: socket, so a handful of connections does not make a finding.
HERD_MIN_WAKES = 20


def accept_herd(ctx: Context, proc: Process) -> Optional[Finding]:
    """More accept wakeups than connections (Envoy's counters), or a shared listening
    socket woken in several workers (the sockets, when the counters could not be read)."""
    accepts = proc.woken(ACCEPT, WORKER)
    wakes = counts(accepts)
    workers = {thread_id(w.target): w.target.comm for w in accepts}
    if not wakes or len(workers) < HERD_MIN_WORKERS or proc.envoy is None:
        return None
    if proc.envoy.read:
        return _by_connections(ctx, proc, proc.envoy, accepts, wakes, sorted(workers.values()))
    return _by_sockets(ctx, proc, proc.envoy, wakes, sorted(workers.values()))


def _by_connections(ctx: Context, proc: Process, envoy: EnvoyCounts, accepts: List[Wakeup],
                    wakes: int, workers: List[str]) -> Optional[Finding]:
    connections = envoy.connections or 0
    if connections < HERD_MIN_CONNECTIONS or wakes / connections < HERD_WAKES_PER_CONNECTION:
        return None
    ratio = wakes / connections
    shared = envoy.shared_listeners()
    where = f"; {_one_socket(shared)} shared by the workers" if shared else ""
    per_worker = _per_worker(accepts, envoy)
    return Finding(
        id="accept-herd", severity=WARNING, title="Accept thundering herd",
        text=(f"New connections woke {len(workers)} workers{ctx.where(proc)} {ratio:.1f} "
              f"times per connection: {wakes} accept wakeups for the {connections} "
              "connections Envoy accepted (listener.*.downstream_cx_total), so each "
              f"connection wakes every waiting worker and only one accepts it{where}. "
              "Per-worker listening sockets (enable_reuse_port, Envoy's default on Linux) "
              "or exact connection balancing avoid it."),
        evidence={"accept_wakeups": wakes, "connections": connections,
                  "wakeups_per_connection": round(ratio, 3), "workers": workers,
                  "shared_listeners": shared, "listeners": dict(envoy.listeners),
                  "by_worker": per_worker, "basis": "envoy counters"})


def _by_sockets(ctx: Context, proc: Process, envoy: EnvoyCounts, wakes: int,
                workers: List[str]) -> Optional[Finding]:
    shared = envoy.shared_listeners()
    if not shared or wakes < HERD_MIN_WAKES:
        return None  # every traffic listener has a socket per worker: one wake each
    return Finding(
        id="accept-herd", severity=WARNING, title="Accept thundering herd",
        text=(f"{_one_socket(shared)} that the workers share, and new connections woke "
              f"{len(workers)} workers{ctx.where(proc)} {wakes} times: each connection "
              "wakes every waiting worker and only one accepts it. "
              f"{without_counters(envoy)}, so this rests "
              "on the sockets (the collector counts them in /proc), not on a count of "
              "connections. Per-worker listening sockets (enable_reuse_port, Envoy's default "
              "on Linux) avoid it."),
        evidence={"accept_wakeups": wakes, "connections": None,
                  "wakeups_per_connection": None, "workers": workers,
                  "shared_listeners": shared, "listeners": dict(envoy.listeners),
                  "by_worker": {}, "basis": "listening sockets"})


def _one_socket(shared: List[str]) -> str:
    """The listeners whose one listening socket every worker waits on, as a clause."""
    return f"{', '.join(shared)} {'has' if len(shared) == 1 else 'have'} one listening socket"


def _per_worker(accepts: List[Wakeup], envoy: EnvoyCounts) -> Dict[str, Dict[str, int]]:
    """Each woken worker's accept wakeups beside the connections Envoy says it accepted."""
    woken: Dict[str, int] = {}
    for w in accepts:
        woken[w.target.comm] = woken.get(w.target.comm, 0) + (w.edge.count or 0)
    return {comm: {"accept_wakeups": n, "connections": envoy.worker_connections(comm)}
            for comm, n in sorted(woken.items())}
