"""Who held the CPU while the traced threads waited to run (analysis/runqueue.py)."""

from __future__ import annotations

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.model import ProcessInfo, Queued, Recording, Task
from kubectl_offwake.analysis.naming import Namer
from kubectl_offwake.analysis.vocabulary import process_label

MINE, OTHER = 100, 200


def two_envoys() -> Recording:
    """Our Envoy and another one on the node, both plain host processes named envoy."""
    rec = Recording()
    rec.processes[MINE] = ProcessInfo(MINE, "envoy", threads={MINE: "envoy", 101: "wrk:worker_0"})
    rec.processes[OTHER] = ProcessInfo(OTHER, "envoy", threads={OTHER: "envoy"})
    rec.targets.append(rec.processes[MINE])
    worker = Task("wrk:worker_0", MINE, 101)
    rec.queued = [
        Queued(worker, Task("envoy", MINE, MINE), 10, 30_000, 5_000),  # our main thread
        Queued(worker, Task("envoy", OTHER, OTHER), 40, 400_000, 9_000),  # the other Envoy
        Queued(worker, Task("envoy", OTHER, OTHER), 2, 1_000, 700),
        Queued(worker, None, 300, 3_000, 40),  # an idle CPU
    ]
    return rec


def test_own_threads_by_thread_other_processes_by_process_idle_apart() -> None:
    held = {h.label: h for h in analyze(two_envoys()).holders}
    assert set(held) == {"envoy (100)", "host: envoy", "idle CPU"}
    assert held["envoy (100)"].own and not held["host: envoy"].own
    assert (held["host: envoy"].count, held["host: envoy"].wait_us,
            held["host: envoy"].max_us) == (42, 401_000, 9_000)
    assert held["host: envoy"].workers_wait_us == 401_000
    assert held["idle CPU"].holder is None


def test_processes_of_one_name_are_one_holder_as_they_are_one_waker() -> None:
    """Short-lived processes (a shell loop's curl) are one neighbour, not a row each."""
    rec = two_envoys()
    third = 300
    rec.processes[third] = ProcessInfo(third, "envoy")
    rec.queued.append(Queued(rec.queued[0].task, Task("envoy", third, third), 1, 50, 50))
    held = {h.label: h for h in analyze(rec).holders}
    assert sorted(held) == ["envoy (100)", "host: envoy", "idle CPU"]
    assert (held["host: envoy"].count, held["host: envoy"].wait_us) == (43, 401_050)


def test_a_containers_processes_are_held_by_container_and_comm() -> None:
    rec = two_envoys()
    for pid, comm in ((300, "curl"), (301, "curl"), (302, "sh")):
        rec.processes[pid] = ProcessInfo(pid, comm, pod="demo/reviews-v1",
                                         container="reviews")
        rec.queued.append(Queued(rec.queued[0].task, Task(comm, pid, pid), 1, 100, 100))
    labels = sorted(h.label for h in analyze(rec).holders)
    assert "demo/reviews-v1/reviews (curl)" in labels
    assert "demo/reviews-v1/reviews (sh)" in labels
    held = {h.label: h for h in analyze(rec).holders}
    assert held["demo/reviews-v1/reviews (curl)"].count == 2


def test_a_process_is_named_by_its_main_threads_comm_at_the_event() -> None:
    """A shell loop's child read by the collector while still ``sh`` and then exec'd to
    ``curl``: its wakes and holds say ``curl``, as the kernel did; threads other than the
    main one keep the process's name."""
    rec = two_envoys()
    rec.processes[300] = ProcessInfo(300, "sh", pod="demo/reviews-v1", container="reviews")
    namer = Namer(rec)
    assert process_label(namer.party(Task("curl", 300, 300))) == "demo/reviews-v1/reviews (curl)"
    assert namer.party(Task("curl", 300, 300)).process_comm == "curl"
    worker = namer.party(Task("wrk:worker_0", MINE, 101))
    assert worker.process_comm == "envoy" and worker.name == "host: envoy"
    assert namer.party(Task("envoy-renamed", OTHER, OTHER)).name == "host: envoy-renamed"
