"""Connection findings (findings/connections.py): the accept thundering herd.

The herd rests on Envoy's count of accepted connections against the workers' accept
wakeups, or (without Envoy's counters) on a shared listening socket; never on how evenly
the workers were woken, which per-worker sockets produce just as well.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import pytest

from tests.unit.findings_support import at_edge, ids, one
from tests.unit.test_aggregate import (
    KUBELET,
    W_ACCEPT,
    Mesh,
    waker,
)

INBOUND = "0.0.0.0:15006"


def herd(wakes: Sequence[int], connections: Optional[int],
         listeners: Optional[Dict[str, int]] = None, read: bool = True) -> Mesh:
    """Workers woken ``wakes[i]`` times by new connections; Envoy accepted
    ``connections`` on the inbound listener (None: no envoy_stats record at all)."""
    m = Mesh()
    for i, n in enumerate(wakes):
        m.wake(f"wrk:worker_{i}", waker(KUBELET), W_ACCEPT, n, n * 1000)
    if connections is not None or not read:
        per = {f"listener.0.0.0.0_15006.worker_{i}.downstream_cx_total": (connections or 0)
               // len(wakes) for i in range(len(wakes))}
        m.envoy_stats({"listener.0.0.0.0_15006.downstream_cx_total": connections or 0,
                       "listener.admin.downstream_cx_total": 500, **per},
                      listeners if listeners is not None else {INBOUND: 1}, read=read)
    return m


def test_accept_herd_rests_on_connections_envoy_accepted() -> None:
    f = one(herd([845, 844], 847).report(), "accept-herd")
    assert f.evidence["connections"] == 847  # the admin listener's connections left out
    assert f.evidence["wakeups_per_connection"] == 1.994  # 1689 / 847
    assert f.evidence["shared_listeners"] == [INBOUND]
    assert f.evidence["by_worker"]["wrk:worker_0"] == {"accept_wakeups": 845,
                                                       "connections": 423}
    assert "2.0 times per connection: 1689 accept wakeups for the 847 connections" in f.text
    assert "0.0.0.0:15006 has one listening socket shared by the workers" in f.text


def test_no_herd_on_per_worker_sockets_however_even_the_wakes() -> None:
    """connection-churn: one wake per connection, spread evenly over two sockets."""
    r = herd([400, 399], 798, {INBOUND: 2}).report()
    assert "accept-herd" not in ids(r)


def test_no_herd_without_envoys_counters_or_sockets() -> None:
    """An even spread of accept wakeups and nothing else (an import): no finding."""
    assert "accept-herd" not in ids(herd([100, 98, 97], None).report())


def test_no_herd_when_one_worker_does_all_the_accepting() -> None:
    assert "accept-herd" not in ids(herd([900], 400).report())


def test_herd_from_a_shared_socket_when_the_admin_could_not_be_read() -> None:
    f = one(herd([30, 28], None, {INBOUND: 1, "127.0.0.1:15000": 1}, read=False).report(),
            "accept-herd")
    assert f.evidence["basis"] == "listening sockets"
    assert f.evidence["shared_listeners"] == [INBOUND]  # loopback (the admin) left out
    assert "could not be read, so this rests on the sockets" in f.text


def test_no_herd_from_sockets_when_every_traffic_listener_has_one_per_worker() -> None:
    r = herd([300, 280], None, {INBOUND: 2, "127.0.0.1:15000": 1}, read=False).report()
    assert "accept-herd" not in ids(r)


# -- each threshold at its edge: the finding at the value, silence just under it --------------

@pytest.mark.parametrize("make,at,under", [
    (lambda w: herd([w // 2, w - w // 2], 100), 130, 129),  # HERD_WAKES_PER_CONNECTION
    (lambda c: herd([c, c], c), 20, 19),  # HERD_MIN_CONNECTIONS (2 wakes each)
    (lambda w: herd([w // 2, w - w // 2], None, read=False), 20, 19),  # HERD_MIN_WAKES
    (lambda n: herd([50] * n, 25 * n), 2, 1),  # HERD_MIN_WORKERS
], ids=["per-connection", "connections", "socket-wakes", "workers"])
def test_thresholds_at_their_edge(make, at, under) -> None:
    at_edge(make, "accept-herd", at, under)
