"""Offer sets as the store keeps them, for tests of the store and the booking below the API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow


def offer_set_rows(
    now: datetime, offers: int, *, start: datetime | None = None, **fields: Any
) -> tuple[OfferSetRow, list[SessionRow]]:
    """One offer set of alice's and its ``offers`` offers of one core and one GiB for an hour
    from ``start`` (default ``now``); ``fields`` set more columns of each offer."""
    start = start or now
    offerset = OfferSetRow(uuid=str(uuid.uuid4()), owner="alice", created=now, result="YES")
    offerset.request, offerset.messages = {"asked": offerset.uuid}, []
    sessions = [
        SessionRow(
            uuid=str(uuid.uuid4()),
            offerset_uuid=offerset.uuid,
            owner="alice",
            phase="OFFERED",
            created=now,
            modified=now,
            expires=now + timedelta(minutes=5),
            start=start,
            end=start + timedelta(hours=1),
            cores=1,
            memory_gib=1,
            storage_gib=0,
            **{
                "executable": {"kind": "batch-script"},
                "platform": "local",
                "messages": [],
                "endpoints": [],
                **fields,
            },
        )
        for _ in range(offers)
    ]
    return offerset, sessions


def stored_sessions(database: Database, phase: str, count: int = 1, **fields: Any) -> list[str]:
    """``count`` sessions of one offer set stored in ``phase`` (as if accepted, or started,
    through the API), starting now; their uuids."""
    offerset, sessions = offer_set_rows(datetime.now(UTC), count, **fields)
    for session in sessions:
        session.phase = phase
    with database.booking(bump=True) as db:
        queries.add_offerset(db, offerset, sessions)
    return [session.uuid for session in sessions]


def claimant(database: Database, uuid: str) -> str | None:
    """The replica that claimed a session, if any."""
    with database.read() as db:
        row = db.get(SessionRow, uuid)
        assert row is not None
        return row.claimed_by
