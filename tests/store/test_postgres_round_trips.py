"""PostgreSQL's booking transactions in few round trips: BEGIN sent with the lock (and, for
one that will book, the version's bump), an offer planned on a current index booked in one
statement alone, and pooled connections checked without a ping while in steady use, yet a
connection the server ended is never handed out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url

from execbroker.holdings import Holdings, Offering
from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import BrokerLock, SessionRow
from tests.rows import offer_set_rows

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    opened = Database.open(postgres_url)
    try:
        yield opened
    finally:
        opened.close()


def _version(database: Database) -> int:
    with database.read() as db:
        return int(db.scalar(select(BrokerLock.version)) or 0)


def test_a_booking_that_will_book_is_counted_as_it_takes_the_lock(database: Database) -> None:
    with database.booking(bump=True) as db:
        assert (db.info["lock_version"], db.info["lock_bumped"]) == (0, True)
    assert _version(database) == 1
    with pytest.raises(RuntimeError), database.booking(bump=True) as db:
        assert db.info["lock_version"] == 1
        raise RuntimeError("refused")  # rolled back: its count too
    assert _version(database) == 1
    with database.booking() as db:  # one that only reads counts nothing by itself
        assert (db.info["lock_version"], db.info["lock_bumped"]) == (1, False)
    assert _version(database) == 1


def test_the_lock_is_held_from_begin_to_commit(database: Database, postgres_url: str) -> None:
    other = Database.open(f"{postgres_url}?options=-c%20lock_timeout%3D200")
    try:
        with database.booking() as db:
            db.execute(text("SELECT 1"))
            with pytest.raises(Exception, match="lock timeout"), other.booking():
                pass
        with other.booking(bump=True) as db:  # free once the first committed
            assert db.info["lock_version"] == 0
    finally:
        other.close()


def _backend_pid(database: Database) -> int:
    with database.read() as db:
        return int(db.scalar(text("SELECT pg_backend_pid()")))


def _terminate(postgres_url: str, pid: int) -> None:
    admin = make_url(postgres_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 30
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.01)


def test_a_pooled_connection_the_server_ended_is_replaced_unseen(
    database: Database, postgres_url: str
) -> None:
    pid = _backend_pid(database)
    assert _backend_pid(database) == pid  # in steady use: the same pooled connection
    _terminate(postgres_url, pid)
    with database.booking(bump=True) as db:  # not an error: another connection
        assert db.info["lock_version"] == 0
    assert _backend_pid(database) != pid
    assert _version(database) == 1


@contextmanager
def _round_trips(database: Database, tmp_path: Path) -> Iterator[list[list[str]]]:
    """The round trips made inside the block, from the driver's own trace of what it sends
    (filled in as the block ends): one ends with each simple Query and each Sync of the
    extended protocol."""
    trace, trips = tmp_path / "trace", []
    with trace.open("w") as sink:

        @event.listens_for(database.engine, "checkout")
        def _traced(dbapi_connection: psycopg.Connection, _record: object, _proxy: object) -> None:
            dbapi_connection.pgconn.trace(sink.fileno())
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

        @event.listens_for(database.engine, "checkin")
        def _untraced(dbapi_connection: psycopg.Connection, _record: object) -> None:
            dbapi_connection.pgconn.untrace()

        try:
            _backend_pid(database)  # the connection pooled, and in use a moment ago
            sink.flush()
            before = trace.stat().st_size
            yield trips
        finally:
            event.remove(database.engine, "checkout", _traced)
            event.remove(database.engine, "checkin", _untraced)
    with trace.open() as traced:
        traced.seek(before)
        lines = traced.read().splitlines()
    sent = [line.split("\t") for line in lines if line.startswith("F")]
    trips += [fields for fields in sent if len(fields) > 2 and fields[2] in ("Query", "Sync")]


def test_an_offer_is_booked_in_three_round_trips(database: Database, tmp_path: Path) -> None:
    """BEGIN with the lock and the bump; the offer set with its sessions, one statement;
    COMMIT (the connection in steady use, so not pinged)."""
    with _round_trips(database, tmp_path) as trips, database.booking(bump=True) as db:
        queries.add_offerset(db, *offer_set_rows(datetime.now(UTC), 3, booked=1))
    assert len(trips) == 3, trips
    assert _version(database) == 1


def test_an_offer_planned_on_a_current_index_is_booked_in_one_round_trip(
    database: Database, tmp_path: Path
) -> None:
    """Planned outside any transaction, then booked in one statement that commits alone."""
    holdings = Holdings(database, lambda: NOW)
    with holdings.booking():  # the index built, and swept: current
        pass
    offerset, sessions = offer_set_rows(NOW, 3)
    versions: list[int] = []

    def job(booker: Offering) -> None:
        versions.append(booker.version)
        for row in sessions:
            row.booked = booker.version
        booker.add_offerset(offerset, sessions)

    with _round_trips(database, tmp_path) as trips:
        holdings.offer(job)
    assert len(trips) == 1, trips
    assert versions == [1]  # planned once: nothing was counted meanwhile
    assert _version(database) == 1
    assert set(holdings.index.holds()) == {row.uuid for row in sessions}
    with database.read() as db:
        assert db.scalars(select(SessionRow.booked)).all() == [1, 1, 1]
