"""``slurm_queue``: the jobs asked about at once share one listing, and no answer is older
than its question (pure: the lister here is a function over a table of jobs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from execbroker.platforms.slurm_queue import Queue
from execbroker.platforms.slurm_states import JobRecord


class Cluster:
    """Jobs and their states; each listing is recorded and can be held until released."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.listings: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.listing = threading.Event()

    def list(self, jobs: Sequence[str]) -> list[JobRecord]:
        self.listings.append(list(jobs))
        snapshot = dict(self.states)  # what squeue would print as it begins
        self.listing.set()
        assert self.hold.wait(10)
        return [JobRecord(job, snapshot[job]) for job in jobs if job in snapshot]


def _ask_all(queue: Queue, jobs: list[str]) -> dict[str, JobRecord | None]:
    answers: dict[str, JobRecord | None] = {}
    threads = [
        threading.Thread(target=lambda j=job: answers.__setitem__(j, queue.record(j)))
        for job in jobs
    ]
    for thread in threads:
        thread.start()
    return answers if all(t.join(10) is None for t in threads) else {}


def test_jobs_asked_about_at_once_share_a_listing_and_each_gets_its_own() -> None:
    cluster = Cluster({str(n): "PENDING" if n % 2 else "RUNNING" for n in range(20)})
    cluster.hold.clear()
    queue = Queue(cluster.list)
    first = threading.Thread(target=queue.record, args=("0",))
    first.start()
    assert cluster.listing.wait(10)  # the first listing is under way; 19 more ask meanwhile
    answers: dict[str, JobRecord | None] = {}
    threads = [
        threading.Thread(target=lambda j=str(n): answers.__setitem__(j, queue.record(j)))
        for n in range(1, 20)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    cluster.hold.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert len(cluster.listings) == 2  # not 20
    assert sorted(cluster.listings[1], key=int) == [str(n) for n in range(1, 20)]
    assert {job: r.state for job, r in answers.items() if r} == {
        str(n): "PENDING" if n % 2 else "RUNNING" for n in range(1, 20)
    }


def test_an_answer_is_never_from_a_listing_that_began_before_the_question() -> None:
    cluster = Cluster({"7": "PENDING"})
    cluster.hold.clear()
    queue = Queue(cluster.list)
    early = threading.Thread(target=queue.record, args=("7",))
    early.start()
    assert cluster.listing.wait(10)
    cluster.states["7"] = "RUNNING"  # changes after that listing began
    late: list[JobRecord | None] = []
    asker = threading.Thread(target=lambda: late.append(queue.record("7")))
    asker.start()
    time.sleep(0.1)
    cluster.hold.set()
    early.join(10)
    asker.join(10)
    assert late[0] is not None and late[0].state == "RUNNING"
    assert len(cluster.listings) == 2


def test_a_job_slurm_no_longer_knows_is_none_and_a_failure_reaches_the_caller() -> None:
    queue = Queue(Cluster({"1": "RUNNING"}).list)
    assert _ask_all(queue, ["1", "2"]) == {"1": JobRecord("1", "RUNNING"), "2": None}

    def failing(jobs: Sequence[str]) -> list[JobRecord]:
        raise RuntimeError("slurmctld is down")

    with pytest.raises(RuntimeError, match="slurmctld is down"):
        Queue(failing).record("1")
