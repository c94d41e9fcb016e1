"""Offer sets as the store keeps them, for tests of the store and the booking below the API."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

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
            executable={"kind": "batch-script"},
            platform="local",
            messages=[],
            endpoints=[],
            **fields,
        )
        for _ in range(offers)
    ]
    return offerset, sessions
