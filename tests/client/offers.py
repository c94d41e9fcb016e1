"""Offers built by hand, for tests that need no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from execbroker.client.results import Offer

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
_numbers = count(1)


def offer(
    *,
    cores: int = 1,
    memory: int = 1,
    storage: int = 0,
    start: float = 0,
    minutes: float = 10,
    cost: float | None = None,
    uuid: str | None = None,
) -> Offer:
    """An offer starting ``start`` minutes after NOW."""
    return Offer(
        uuid=uuid or f"{next(_numbers):08d}-0000-0000-0000-000000000000",
        url="",
        phase="OFFERED",
        executable_kind="batch-script",
        cores=cores,
        memory=memory,
        storage=storage,
        start=NOW + timedelta(minutes=start),
        duration=timedelta(minutes=minutes),
        cost=cost,
    )
