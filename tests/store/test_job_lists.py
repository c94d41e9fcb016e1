"""Dialect job lists are filtered and paged in SQL, on SQLite and PostgreSQL alike: a match
behind the first thousand rows is found, and pages follow (created, uuid) exactly."""

from __future__ import annotations

import uuid as uuids
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from execbroker.model.sessions import Phase
from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = f"lists-{uuids.uuid4().hex[:8]}"  # a shared PostgreSQL: only this test's rows


def _row(offerset: str, n: int, **changes: object) -> SessionRow:
    created = T0 + timedelta(seconds=n // 2)  # pairs share an instant: the uuid breaks ties
    values: dict[str, object] = {
        "uuid": f"{n:08d}-0000-4000-8000-{uuids.uuid4().hex[:12]}",
        "offerset_uuid": offerset,
        "owner": OWNER,
        "phase": Phase.COMPLETED,
        "created": created,
        "modified": created,
        "expires": created,
        "start": created,
        "end": created + timedelta(minutes=1),
        "cores": 1,
        "memory_gib": 1,
        "storage_gib": 0,
        "executable": {"kind": "batch-script"},
        "platform": "local",
        "messages": [],
        "endpoints": [],
        "dialect": "tes",
        "dialect_meta": {"name": f"task-{n}", "task": {"tags": {"n": str(n)}}},
        **changes,
    }
    return SessionRow(**values)


def _fill(database: Database) -> list[SessionRow]:
    offerset = str(uuids.uuid4())
    rows = [_row(offerset, n) for n in range(1200)]
    rows[3] = _row(offerset, 3, dialect_meta={"name": "old_one", "task": {"tags": {"k": "v"}}})
    rows[5] = _row(offerset, 5, phase=Phase.FAILED, exit_code=2)
    rows[6] = _row(offerset, 6, phase=Phase.FAILED, exit_code=None)
    rows[7] = _row(offerset, 7, dialect_meta={"name": "gone", "deleted": True})
    rows[8] = _row(offerset, 8, dialect_meta=None)
    with database.write() as db:
        db.add(
            OfferSetRow(
                uuid=offerset, owner=OWNER, created=T0, result="YES", request={}, messages=[]
            )
        )
        db.flush()
        db.add_all(rows)
    return rows


def _check(database: Database) -> None:
    rows = _fill(database)
    try:
        with database.read() as db:

            def find(limit: int = 2000, before=None, **where: object) -> list[str]:
                found = queries.list_jobs(
                    db, queries.JobFilter(owner=OWNER, **where), before=before, limit=limit
                )
                return [row.uuid for row in found]

            # the oldest rows, far behind the newest thousand, are found by every filter
            assert find(name_prefix="old_") == [rows[3].uuid]
            assert find(name_prefix="old%") == []  # a prefix, not a LIKE pattern
            assert find(tags=[("k", "v")]) == [rows[3].uuid]
            assert find(tags=[("k", None)]) == [rows[3].uuid]
            assert find(tags=[("k", "w")]) == []
            failed = [Phase.FAILED]
            assert find(phases=failed, exit_error=True) == [rows[5].uuid]
            assert find(phases=failed, exit_error=False) == [rows[6].uuid]
            assert rows[7].uuid not in find()  # deleted
            assert rows[8].uuid in find()  # made through the broker's own API
            assert find(created_after=rows[1190].created) == [r.uuid for r in rows[1192:]][::-1]
            # pages: newest first, each after the last key of the one before, none lost
            seen: list[str] = []
            before = None
            while True:
                page = queries.list_jobs(
                    db, queries.JobFilter(owner=OWNER), before=before, limit=500
                )
                seen += [row.uuid for row in page]
                if len(page) < 500:
                    break
                before = (page[-1].created, page[-1].uuid)
            expected = sorted(
                (row for row in rows if row is not rows[7]),
                key=lambda row: (row.created, row.uuid),
                reverse=True,
            )
            assert seen == [row.uuid for row in expected]
    finally:
        with database.write() as db:
            db.execute(delete(SessionRow).where(SessionRow.owner == OWNER))
            db.execute(delete(OfferSetRow).where(OfferSetRow.owner == OWNER))


def test_sqlite_filters_and_pages_job_lists(tmp_path):
    database = Database.open(f"sqlite:///{tmp_path / 'broker.db'}")
    _check(database)
    database.engine.dispose()


@pytest.mark.postgres
def test_postgres_filters_and_pages_job_lists(postgres_url):
    database = Database.open(postgres_url)
    _check(database)
    database.engine.dispose()
