"""Stored offer sets and sessions, rendered as the wire schema's documents."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from execbroker.model.common import ComponentMetadata, EnumValueOption, MessageItem, MinMaxInt
from execbroker.model.resources import SimpleCost, SimpleStorageResource
from execbroker.model.sessions import (
    Connector,
    ExecutionSession,
    OfferedCompute,
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


def _component_uuid(session_uuid: str, part: str) -> str:
    """The UUID of one component of a session (``executable``, ``compute``, ``storage/0``):
    the schema has the service assign every component one; derived, so it is the same at
    every reading and unique across sessions without being stored."""
    return str(uuid.uuid5(uuid.UUID(session_uuid), part))


def _identified(item: Mapping[str, Any], session_uuid: str, part: str) -> dict[str, Any]:
    """``item`` (a stored component) with a UUID: the one the client gave it, which its
    volumes may refer to it by, else the one this service derives for it."""
    meta = dict(item.get("meta") or {})
    meta["uuid"] = meta.get("uuid") or _component_uuid(session_uuid, part)
    return {**item, "meta": meta}


def _storage(row: SessionRow, requested: Mapping[str, Any]) -> list[SimpleStorageResource]:
    """The storage the request named (so its data's ``storage`` references resolve in the
    offer), sized as booked when it is the only one and gave no size; else the booked total."""
    asked = [
        SimpleStorageResource.model_validate(_identified(item, row.uuid, f"storage/{index}"))
        for index, item in enumerate(requested.get("storage", []))
    ]
    if len(asked) == 1 and asked[0].size is None and row.storage_gib:
        asked[0].size = _exactly(row.storage_gib)
    if asked or not row.storage_gib:
        return asked
    meta = ComponentMetadata(uuid=_component_uuid(row.uuid, "storage/0"))
    return [SimpleStorageResource(meta=meta, size=_exactly(row.storage_gib))]


def _compute(
    row: SessionRow, requested: Mapping[str, Any], booked: ScheduledExecutionSchedule
) -> OfferedCompute:
    """The booked cores and memory on the session's schedule (``booked``), with the name and
    volumes the request gave its compute."""
    asked = _identified(requested.get("compute") or {}, row.uuid, "compute")
    return OfferedCompute(
        meta=ComponentMetadata.model_validate(asked["meta"]),
        schedule=booked,
        cores=_exactly(row.cores),
        memory=_exactly(row.memory_gib),
        volumes=list(asked.get("volumes", [])),
    )


def session(
    row: SessionRow, base_url: str, requested: Mapping[str, Any] | None = None
) -> ExecutionSession:
    """``requested``: the request the session was offered for, as stored; its data and
    storage resources are part of the session the schema describes."""
    requested = requested or {}
    finished = row.phase not in CANCELLABLE and row.phase != Phase.OFFERED
    booked = schedule(row)  # the session's and its compute's: built once (nothing edits it)
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
        executable=_identified(row.executable, row.uuid, "executable"),
        compute=_compute(row, requested, booked),
        storage=_storage(row, requested),
        data=[
            _identified(item, row.uuid, f"data/{index}")
            for index, item in enumerate(requested.get("data", []))
        ],
        schedule=booked,
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
        offers=[session(item, base_url, row.request) for item in answer.sessions],
    )
