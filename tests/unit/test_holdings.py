"""The group commit of accepts (``Holdings.together``) on a real SQLite database: a job that
refuses before it writes leaves the rest of its group booked; one that fails after writing
fails its whole group, none of it booked, and the next group books again."""

from __future__ import annotations

import threading
import time
import uuid as uuids
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from execbroker.errors import PhaseConflict, Unavailable
from execbroker.holdings import Booker, Holdings
from execbroker.model.sessions import Phase
from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow
from execbroker.timeutil import utcnow

Job = Callable[[Booker], Any]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(f"sqlite:///{tmp_path / 'broker.db'}")
    yield database
    database.close()


def _offers(database: Database, count: int) -> list[str]:
    """``count`` offers (one offer set each), starting in an hour."""
    now = utcnow()
    made = []
    with database.write() as db:
        for _ in range(count):
            offerset = OfferSetRow(
                uuid=str(uuids.uuid4()), owner="alice", created=now, result="YES"
            )
            offerset.request, offerset.messages = {}, []
            start = now + timedelta(hours=1)
            session = SessionRow(
                uuid=str(uuids.uuid4()), offerset_uuid=offerset.uuid, owner="alice",
                phase=Phase.OFFERED.value, created=now, modified=now,
                expires=now + timedelta(minutes=5), start=start, end=start + timedelta(hours=1),
                cores=1, memory_gib=1, storage_gib=0, executable={"kind": "batch-script"},
                platform="local", messages=[], endpoints=[], dialect="execbroker",
            )  # fmt: skip
            queries.add_offerset(db, offerset, [session])
            made.append(session.uuid)
    return made


def _phases(database: Database, sessions: list[str]) -> list[str]:
    with database.read() as db:
        found = dict(db.execute(select(SessionRow.uuid, SessionRow.phase)).all())
    return [found[uuid] for uuid in sessions]


def _accepting(uuid: str, *, then: Exception | None = None, refuse: bool = False) -> Job:
    """A job accepting one offer; ``refuse``: refusing before it writes; ``then``: raising
    that once it has written."""

    def job(booker: Booker) -> str:
        if refuse:
            raise PhaseConflict(f"{uuid}: refused")
        booker.wrote = True
        offerset = booker.connection.scalar(
            select(SessionRow.offerset_uuid).where(SessionRow.uuid == uuid)
        )
        notes = ({"message": "accepted"}, {"message": "a sibling was accepted"})
        rejected = queries.accept_of_set(
            booker.connection, uuid, str(offerset), booker.now, notes, booker.version
        )
        assert rejected == []  # its set's only offer
        if then is not None:
            raise then
        return uuid

    return job


def _in_one_group(holdings: Holdings, jobs: list[Job]) -> list[Future[Any]]:
    """Run ``jobs`` as one group: queued while the writer is held by a job of its own."""
    held, go = threading.Event(), threading.Event()

    def hold(_: Booker) -> None:
        held.set()
        assert go.wait(30)

    pool = ThreadPoolExecutor(max_workers=len(jobs) + 1)
    first = pool.submit(holdings.together, hold)
    assert held.wait(30)
    answers = [pool.submit(holdings.together, job) for job in jobs]
    deadline = time.monotonic() + 30
    while holdings._queue.qsize() < len(jobs):  # every job queued behind the held one
        assert time.monotonic() < deadline, "jobs not queued"
        time.sleep(0.01)
    go.set()
    first.result(30)
    pool.shutdown(wait=True)
    return answers


def test_a_refusal_before_writing_leaves_the_rest_of_its_group_booked(
    database: Database,
) -> None:
    holdings = Holdings(database, utcnow)
    first, refused, last = _offers(database, 3)
    jobs = [_accepting(first), _accepting(refused, refuse=True), _accepting(last)]
    answers = _in_one_group(holdings, jobs)
    assert answers[0].result() == first and answers[2].result() == last
    with pytest.raises(PhaseConflict):
        answers[1].result()
    assert _phases(database, [first, refused, last]) == ["ACCEPTED", "OFFERED", "ACCEPTED"]


def test_a_failure_after_writing_fails_the_whole_group_and_books_none_of_it(
    database: Database,
) -> None:
    holdings = Holdings(database, utcnow)
    sessions = _offers(database, 4)
    jobs = [
        _accepting(sessions[0]),
        _accepting(sessions[1], then=RuntimeError("broke after its write")),
        _accepting(sessions[2]),
    ]
    for answer in _in_one_group(holdings, jobs):
        with pytest.raises(Unavailable, match="not booked"):
            answer.result()
    assert _phases(database, sessions[:3]) == ["OFFERED"] * 3
    # the next group books again (on an index rebuilt from the database)
    assert holdings.together(_accepting(sessions[3])) == sessions[3]
    assert _phases(database, sessions) == ["OFFERED"] * 3 + ["ACCEPTED"]
