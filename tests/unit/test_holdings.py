"""The group commit of accepts (``Holdings.together``) on a real SQLite database: a job that
refuses before it writes leaves the rest of its group booked; one that fails after writing
fails its whole group, none of it booked, and the next group books again. A group reads its
offers in one statement and writes its decisions in one, and each accept of it sees what the
ones before it decided (an offer accepted, or rejected as a sibling, is refused)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from execbroker.errors import PhaseConflict, Unavailable
from execbroker.holdings import Booker, Holdings
from execbroker.model.sessions import Phase
from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import SessionRow
from execbroker.timeutil import utcnow
from tests.rows import offer_set_rows

Job = Callable[[Booker], Any]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(f"sqlite:///{tmp_path / 'broker.db'}")
    yield database
    database.close()


def _offers(database: Database, count: int, *, per_set: int = 1) -> list[str]:
    """``count`` offer sets of ``per_set`` offers each, starting in an hour (their uuids in
    order, a set's together)."""
    now = utcnow()
    made = []
    with database.write() as db:
        for _ in range(count):
            offerset, sessions = offer_set_rows(
                now, per_set, start=now + timedelta(hours=1), dialect="execbroker"
            )
            queries.add_offerset(db, offerset, sessions)
            made += [session.uuid for session in sessions]
    return made


def _phases(database: Database, sessions: list[str]) -> list[str]:
    with database.read() as db:
        found = dict(db.execute(select(SessionRow.uuid, SessionRow.phase)).all())
    return [found[uuid] for uuid in sessions]


def _accepting(uuid: str, *, then: Exception | None = None, refuse: bool = False) -> Job:
    """A job accepting one offer as the service does (refused unless it is OFFERED; its
    siblings rejected), answering its uuid and the siblings it rejected; ``refuse``: refusing
    before it writes; ``then``: raising that once it has written."""

    def job(booker: Booker) -> tuple[str, list[str]]:
        found = booker.offers.offer(uuid)
        assert found is not None
        row, request = found
        assert request == {"asked": row.offerset_uuid}  # its offer set's, as stored
        if refuse or row.phase != Phase.OFFERED:
            raise PhaseConflict(f"{uuid} is {row.phase}: refused")
        booker.wrote = True
        notes = ({"message": "accepted"}, {"message": "a sibling was accepted"})
        rejected = booker.offers.accept(row, booker.now, notes)
        if then is not None:
            raise then
        return uuid, rejected

    return job


def _in_one_group(
    holdings: Holdings, jobs: list[Job], reads: list[str | None] | None = None
) -> list[Future[Any]]:
    """Run ``jobs`` as one group: queued while the writer is held by a job of its own;
    ``reads``: the offer each job reads, read with the group's."""
    held, go = threading.Event(), threading.Event()

    def hold(_: Booker) -> None:
        held.set()
        assert go.wait(30)

    pool = ThreadPoolExecutor(max_workers=len(jobs) + 1)
    first = pool.submit(holdings.together, hold)
    assert held.wait(30)
    reads = reads or [None] * len(jobs)
    answers = [
        pool.submit(holdings.together, job, reads=read)
        for job, read in zip(jobs, reads, strict=True)
    ]
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
    assert answers[0].result() == (first, []) and answers[2].result() == (last, [])
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
    assert holdings.together(_accepting(sessions[3])) == (sessions[3], [])
    assert _phases(database, sessions) == ["OFFERED"] * 3 + ["ACCEPTED"]


def _messages(database: Database, uuid: str) -> list[str]:
    with database.read() as db:
        row = queries.get_session(db, uuid)
    assert row is not None
    return [item["message"] for item in row.messages]


def test_an_offer_rejected_as_a_sibling_earlier_in_its_group_is_refused_not_failed(
    database: Database,
) -> None:
    holdings = Holdings(database, utcnow)
    first, sibling, other = _offers(database, 1, per_set=3)
    alone = _offers(database, 1)[0]
    jobs = [_accepting(first), _accepting(sibling), _accepting(first), _accepting(alone)]
    answers = _in_one_group(holdings, jobs, reads=[first, sibling, first, alone])
    assert answers[0].result() == (first, sorted([sibling, other]))
    for refused, phase in ((answers[1], "REJECTED"), (answers[2], "ACCEPTED")):
        with pytest.raises(PhaseConflict, match=f"is {phase}: refused"):
            refused.result()
    assert answers[3].result() == (alone, [])
    phases = _phases(database, [first, sibling, other, alone])
    assert phases == ["ACCEPTED", "REJECTED", "REJECTED", "ACCEPTED"]
    assert _messages(database, first) == ["accepted"]
    assert _messages(database, sibling) == ["a sibling was accepted"]


def test_a_group_reads_its_offers_in_one_statement_and_writes_them_in_one(
    database: Database,
) -> None:
    holdings = Holdings(database, utcnow)
    sessions = _offers(database, 6, per_set=2)
    asked = sessions[::2]
    offer_reads, decision_writes = [], []

    def seen(*args: Any) -> None:
        statement, parameters, executemany = args[2], args[3], args[5]
        if "offerset_request" in statement:
            offer_reads.append(statement)
        elif statement.startswith("UPDATE sessions SET phase"):
            decision_writes.append(len(parameters) if executemany else 1)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        answers = _in_one_group(holdings, [_accepting(uuid) for uuid in asked], reads=asked)
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert [answer.result() for answer in answers] == [
        (uuid, [sibling]) for uuid, sibling in zip(asked, sessions[1::2], strict=True)
    ]
    assert _phases(database, sessions) == ["ACCEPTED", "REJECTED"] * 6
    assert len(offer_reads) == 1  # the six offers and their siblings
    assert decision_writes == [12]  # one statement: six accepted, six rejected
