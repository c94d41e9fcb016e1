"""The booking path's writes, on SQLite and on PostgreSQL (whose statements carry their rows
as JSON documents: nested JSON, unset columns, floats and microseconds must come through
unchanged): an offer set and its offers read back exactly as they were made, column for
column, and decided offers exactly as the decision left them in memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow
from tests.rows import offer_set_rows

NOW = datetime(2026, 12, 2, 13, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        f"sqlite:///{tmp_path / 'broker.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    opened = Database.open(url)
    try:
        yield opened
    finally:
        opened.close()


def _columns(row: OfferSetRow | SessionRow) -> dict[str, object]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def test_an_offer_set_reads_back_as_it_was_made(database: Database) -> None:
    offerset, sessions = offer_set_rows(NOW, 3, booked=7)
    offerset.request = {"executable": {"script": "echo 'naïve' \"quoted\"\n"}, "n": [1, 2.5]}
    offerset.messages = [{"level": "INFO", "message": "ünïcode ✓"}]
    sessions[0].cost, sessions[0].cost_type = 0.1 + 0.2, "core-hours"
    sessions[1].dialect, sessions[1].dialect_meta = "tes", {"name": "t", "tags": {"k": None}}
    sessions[2].started = NOW + timedelta(microseconds=1)
    sessions[2].endpoints = [{"kind": "http", "url": "http://127.0.0.1:8080/"}]
    made = {row.uuid: _columns(row) for row in (offerset, *sessions)}
    for row in made.values():
        row["spelling"] = "current"  # left unset: the column's default
    for row in sessions[0], sessions[2]:
        made[row.uuid]["dialect"] = "execbroker"
    with database.booking(bump=True) as db:
        queries.add_offerset(db, offerset, sessions)
    with database.read() as db:
        read = [db.get(OfferSetRow, offerset.uuid), *db.scalars(select(SessionRow)).all()]
    assert {row.uuid: _columns(row) for row in read} == made


def test_decided_offers_read_back_as_decided(database: Database) -> None:
    offerset, sessions = offer_set_rows(NOW, 3, booked=1)
    for row in sessions:
        row.messages = [{"level": "INFO", "message": "offered"}]
    with database.booking(bump=True) as db:
        queries.add_offerset(db, offerset, sessions)
    later = NOW + timedelta(seconds=1, microseconds=7)
    notes = {"level": "INFO", "message": "accepted ✓"}, {"level": "INFO", "message": "rejected"}
    decisions = [
        queries.Decision(sessions[0].uuid, "ACCEPTED", later, notes[0]),
        queries.Decision(sessions[1].uuid, "REJECTED", later, notes[1]),
    ]
    with database.booking(bump=True) as db:
        queries.decide_offers(db.connection(), decisions, 2)
    expected = {
        row.uuid: _columns(row) | {"spelling": "current", "dialect": "execbroker"}
        for row in sessions
    }
    for decision in decisions:  # what the decision changes; the third offer left as it was
        changed = {"phase": decision.phase, "modified": later, "booked": 2}
        expected[decision.uuid] |= changed
        expected[decision.uuid]["messages"].append(decision.note)
    with database.read() as db:
        assert {row.uuid: _columns(row) for row in db.scalars(select(SessionRow))} == expected
    # one no longer OFFERED: refused, and the whole transaction with it
    again = [queries.Decision(sessions[2].uuid, "ACCEPTED", later, notes[0]), decisions[0]]
    with pytest.raises(RuntimeError, match="1 of the offers"), database.booking() as db:
        queries.decide_offers(db.connection(), again, 3)
    with database.read() as db:
        assert db.get(SessionRow, sessions[2].uuid).phase == "OFFERED"
