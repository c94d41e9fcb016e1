"""Offers planned on a replica's index outside any transaction (``Holdings.offer``) are as safe
as offers planned under the lock: one planned on an index that missed another replica's booking
is planned again under the lock, and replicas offering at once never hold more than the quota,
on PostgreSQL (where the tentative plan is booked in one statement alone) and on one SQLite
file (where every offer is planned under the lock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from execbroker.holdings import Holdings, Offering
from execbroker.planner import Quota, Resources
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow
from tests.rows import offer_set_rows

NOW = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
START = NOW + timedelta(hours=1)  # every offer holds one core over [START, START + 1 h)
END = START + timedelta(hours=1)
CORES = 3
QUOTA = Quota(Resources(CORES, 100, 100), max_sessions=100, max_duration=timedelta(hours=2))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def replicas(url: str) -> Iterator[list[Holdings]]:
    """Two replicas' indexes, each over a database of its own on one store, built (and
    swept: a tentative plan needs no sweep first) by a first booking transaction."""
    databases = [Database.open(url), Database.open(url)]
    try:
        found = [Holdings(database, lambda: NOW) for database in databases]
        for holdings in found:
            with holdings.booking():
                pass
        yield found
    finally:
        for database in databases:
            database.close()


def _one_core(booker: Offering) -> bool:
    """The offer of one core over [START, END) if it fits the quota, else an offer set of
    none (a refusal, made after learning every release); whether it offered."""
    fits = booker.calendar().fits(START, END, Resources(1, 0, 0), QUOTA)
    if not fits and booker.refresh():
        fits = booker.calendar().fits(START, END, Resources(1, 0, 0), QUOTA)
    offerset, sessions = offer_set_rows(NOW, 1 if fits else 0, start=START)
    for row in sessions:
        row.booked = booker.version
    booker.add_offerset(offerset, sessions)
    return fits


def _held(database: Database) -> int:
    with database.read() as db:
        return int(db.scalar(select(func.count()).select_from(SessionRow)) or 0)


def test_an_offer_planned_on_an_index_that_missed_a_booking_is_planned_again(
    replicas: list[Holdings],
) -> None:
    first, second = replicas
    for _ in range(CORES - 1):  # first's index has seen none of these: it is at version 0
        assert second.offer(_one_core)
    tries: list[tuple[str, int, int]] = []

    def watched(booker: Offering) -> bool:
        held, _ = booker.calendar().peak(START, END)
        tries.append((type(booker).__name__, booker.version, held.cores))
        return _one_core(booker)

    assert first.offer(watched)  # the last core: planned again on what second booked
    planned_under_the_lock = ("Booker", CORES, CORES - 1)
    if first.database.statements_alone:  # tried alone on the index first: nothing booked
        assert tries == [("_Tentative", 1, 0), planned_under_the_lock]
    else:
        assert tries == [planned_under_the_lock]
    assert not second.offer(_one_core)  # second learns of it in turn: the quota is full
    assert _held(first.database) == CORES


def test_replicas_offering_at_once_never_hold_more_than_the_quota(
    replicas: list[Holdings],
) -> None:
    offered: list[bool] = []
    errors: list[BaseException] = []
    go = threading.Barrier(8)

    def ask(holdings: Holdings) -> None:
        go.wait()
        try:
            for _ in range(5):
                offered.append(holdings.offer(_one_core))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(replicas[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert offered.count(True) == CORES, offered
    assert _held(replicas[0].database) == CORES
    with replicas[0].database.read() as db:  # every answer stored, the refusals too
        assert db.scalar(select(func.count()).select_from(OfferSetRow)) == 40
