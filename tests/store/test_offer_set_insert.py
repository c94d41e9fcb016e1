"""An offer set and its offers read back exactly as they were made, column for column, on
SQLite and on PostgreSQL (whose INSERT carries them as JSON documents: nested JSON, unset
columns, floats and microseconds must come through unchanged)."""

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
