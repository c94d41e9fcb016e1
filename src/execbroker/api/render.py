"""Stored offer sets and sessions, rendered as the wire schema's documents."""

from __future__ import annotations

from execbroker.model.common import ComponentMetadata, EnumValueOption, MessageItem, MinMaxInt
from execbroker.model.resources import SimpleComputeResource, SimpleCost, SimpleStorageResource
from execbroker.model.sessions import (
    Connector,
    ExecutionSession,
    OfferSetResponse,
    Phase,
    ScheduledExecutionSchedule,
    ScheduleStartDurationInstant,
    ScheduleStartDurationInterval,
)
from execbroker.service import CANCELLABLE, OfferSet
from execbroker.store.tables import SessionRow
from execbroker.timeutil import format_duration, format_instant


def _options(phase: str) -> list[EnumValueOption]:
    if phase == Phase.OFFERED:
        return [EnumValueOption(path="phase", values=[Phase.ACCEPTED, Phase.REJECTED])]
    if phase in CANCELLABLE:
        return [EnumValueOption(path="phase", values=[Phase.CANCELLED])]
    return []


def _exactly(amount: int) -> MinMaxInt:
    return MinMaxInt(min=amount, max=amount)


NO_TIME = "PT0S"


def schedule(row: SessionRow) -> ScheduledExecutionSchedule:
    """The session's life as the schema's schedule: it is prepared by its start (the broker
    books no separate preparing or releasing time), available from a fixed start (an
    interval of no length) for its booked duration, and released at its end."""
    start, end = format_instant(row.start), format_instant(row.end)
    return ScheduledExecutionSchedule(
        preparing=ScheduleStartDurationInstant(start=start, duration=NO_TIME),
        available=ScheduleStartDurationInterval(
            start=f"{start}/{start}", duration=format_duration(row.end - row.start)
        ),
        releasing=ScheduleStartDurationInstant(start=end, duration=NO_TIME),
    )


def session(row: SessionRow, base_url: str) -> ExecutionSession:
    finished = row.phase not in CANCELLABLE and row.phase != Phase.OFFERED
    return ExecutionSession(
        meta=ComponentMetadata(
            uuid=row.uuid,
            url=f"{base_url}/sessions/{row.uuid}",
            created=row.created,
            modified=row.modified,
            messages=[MessageItem.model_validate(item) for item in row.messages],
            options=_options(row.phase),
        ),
        phase=Phase(row.phase),
        expires=row.expires if row.phase == Phase.OFFERED else None,
        executable=row.executable,
        compute=SimpleComputeResource(cores=_exactly(row.cores), memory=_exactly(row.memory_gib)),
        storage=[SimpleStorageResource(size=_exactly(row.storage_gib))] if row.storage_gib else [],
        schedule=schedule(row),
        costs=[SimpleCost(type=row.cost_type, min=row.cost, max=row.cost)]
        if row.cost is not None
        else [],
        connectors=[
            Connector(status="FINISHED" if finished else "AVAILABLE", **endpoint)
            for endpoint in row.endpoints
        ],
    )


def offerset(answer: OfferSet, base_url: str) -> OfferSetResponse:
    row = answer.row
    return OfferSetResponse(
        meta=ComponentMetadata(
            uuid=row.uuid,
            url=f"{base_url}/offersets/{row.uuid}",
            created=row.created,
            messages=[MessageItem.model_validate(item) for item in row.messages],
        ),
        result=row.result,  # type: ignore[arg-type]
        offers=[session(item, base_url) for item in answer.sessions],
    )
