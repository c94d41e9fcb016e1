"""Stored offer sets and sessions, rendered as the wire schema's documents.

``session`` builds a session's model (validated, as every model is); ``session_document``
builds the same session straight as the JSON-like document that model dumps to, its kinds
spelt as asked (``offerset_document`` likewise an offer set with its offers): what it is made
of was validated when it was stored (by the broker itself, or from a request checked whole),
so answering one, which every request for offers and every accept does, need not validate it
all again. Any part not in the form the broker stores it in
goes through its model as before, so the document is always the model's dump.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from execbroker import kinds
from execbroker.model.common import (
    ComponentMetadata,
    EnumValueOption,
    MessageItem,
    MessageLevel,
    MinMaxInt,
)
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
    # uuid.uuid5's value, without its two UUID objects (each answer derives several)
    digest = bytearray(
        hashlib.sha1(uuid.UUID(session_uuid).bytes + part.encode(), usedforsecurity=False).digest()
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest[:16].hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


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


# -- the same documents, built without validating what was validated when it was stored --

_INSTANT = TypeAdapter(datetime)
# A message as ``service.message`` stores it: its time in ``format_instant``'s form, which
# the model reads and writes back unchanged.
_STORED_MESSAGE = frozenset(("level", "message", "time"))
_LEVELS = frozenset(get_args(MessageLevel))
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_ENDPOINT = frozenset(("protocol", "location"))


def _dumped(model: BaseModel, spelling: kinds.Spelling) -> dict[str, Any]:
    return kinds.respell_in_place(model.model_dump(mode="json", exclude_none=True), spelling)


def _instant(value: datetime) -> str:
    return _INSTANT.dump_python(value, mode="json")  # type: ignore[no-any-return]


def _message(item: Mapping[str, Any], spelling: kinds.Spelling) -> dict[str, Any]:
    if (
        item.keys() == _STORED_MESSAGE
        and item["level"] in _LEVELS
        and isinstance(item["message"], str)
        and isinstance(item["time"], str)
        and _STAMP.fullmatch(item["time"])
    ):
        return {"time": item["time"], "level": item["level"], "message": item["message"]}
    return _dumped(MessageItem.model_validate(item), spelling)


def _plain_meta(uuid: str) -> dict[str, Any]:
    """``ComponentMetadata(uuid=uuid)``'s dump."""
    return {"uuid": uuid, "messages": [], "options": []}


def _bare_meta(meta: Mapping[str, Any], spelling: kinds.Spelling) -> dict[str, Any]:
    """A component's metadata: only the UUID it is known by, in the usual case."""
    if meta.keys() == {"uuid"} and isinstance(meta["uuid"], str):
        return _plain_meta(meta["uuid"])
    return _dumped(ComponentMetadata.model_validate(meta), spelling)


# Durations repeat (most sessions last what a few requests asked), and isodate is slow.
_duration = functools.lru_cache(maxsize=1024)(format_duration)


def _schedule(row: SessionRow) -> dict[str, Any]:
    """``schedule(row)``'s dump."""
    start, end = format_instant(row.start), format_instant(row.end)
    return {
        "preparing": {"start": start, "duration": NO_TIME},
        "available": {"start": f"{start}/{start}", "duration": _duration(row.end - row.start)},
        "releasing": {"start": end, "duration": NO_TIME},
    }


def _copy(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule's copy: a document shares no part (YAML would write a shared one as an
    anchor and an alias)."""
    return {step: dict(times) for step, times in schedule.items()}


def _exact(amount: int) -> dict[str, int]:
    return {"min": amount, "max": amount}


def _connector(
    endpoint: Mapping[str, Any], status: str, spelling: kinds.Spelling
) -> dict[str, Any]:
    if endpoint.keys() == _ENDPOINT and all(isinstance(v, str) for v in endpoint.values()):
        return {
            "status": status,
            "protocol": endpoint["protocol"],
            "location": endpoint["location"],
        }
    return _dumped(Connector(status=status, **endpoint), spelling)  # type: ignore[arg-type]


def session_document(
    row: SessionRow,
    base_url: str,
    requested: Mapping[str, Any] | None = None,
    spelling: kinds.Spelling = kinds.Spelling.CURRENT,
) -> dict[str, Any]:
    """``session(row, base_url, requested)`` dumped as an answer dumps it (JSON types, no
    None, its kinds spelt in ``spelling``), built from the stored row without validating it
    again (see the module's docstring). Every container in it is its own: it shares nothing
    with the row or the request."""
    requested = requested or {}
    finished = row.phase not in CANCELLABLE and row.phase != Phase.OFFERED
    meta: dict[str, Any] = {
        "uuid": row.uuid,
        "url": f"{base_url}/sessions/{row.uuid}",
        "created": _instant(row.created),
        "modified": _instant(row.modified),
        "messages": [_message(item, spelling) for item in row.messages],
        "options": [
            {
                "kind": kinds.spell(option.kind, spelling),
                "path": option.path,
                "values": [str(value) for value in option.values],  # no enum left
            }
            for option in _options(row.phase)
        ],
    }
    document: dict[str, Any] = {
        "kind": kinds.spell(kinds.SCHEDULED_SESSION, spelling),
        "meta": meta,
        "phase": Phase(row.phase).value,
    }
    if row.phase == Phase.OFFERED:
        document["expires"] = _instant(row.expires)
    document["executable"] = kinds.respell(
        _identified(row.executable, row.uuid, "executable"), spelling
    )
    asked = _identified(requested.get("compute") or {}, row.uuid, "compute")
    booked = _schedule(row)
    document["compute"] = {
        "kind": kinds.spell(kinds.SIMPLE_COMPUTE, spelling),
        "meta": _bare_meta(asked["meta"], spelling),
        "cores": _exact(row.cores),
        "memory": _exact(row.memory_gib),
        "volumes": kinds.respell(list(asked.get("volumes", [])), spelling),
        "schedule": booked,
    }
    if requested.get("storage"):  # as the request gave it: through its model
        document["storage"] = [_dumped(item, spelling) for item in _storage(row, requested)]
    elif row.storage_gib:
        document["storage"] = [
            {
                "kind": kinds.spell(kinds.SIMPLE_STORAGE, spelling),
                "meta": _plain_meta(_component_uuid(row.uuid, "storage/0")),
                "size": _exact(row.storage_gib),
            }
        ]
    else:
        document["storage"] = []
    document["data"] = [
        kinds.respell(_identified(item, row.uuid, f"data/{index}"), spelling)
        for index, item in enumerate(requested.get("data", []))
    ]
    document["schedule"] = _copy(booked)
    cost: dict[str, Any] = {"kind": kinds.spell(kinds.SIMPLE_COST, spelling)}
    if row.cost is not None:
        if row.cost_type is not None:
            cost["type"] = row.cost_type
        cost["min"] = cost["max"] = float(row.cost)
    document["costs"] = [cost] if row.cost is not None else []
    status = "FINISHED" if finished else "AVAILABLE"
    document["connectors"] = [_connector(endpoint, status, spelling) for endpoint in row.endpoints]
    return document


def offerset_document(answer: OfferSet, base_url: str) -> dict[str, Any]:
    """``offerset(answer, base_url)`` dumped as an answer dumps it, in the offer set's
    spelling, built as ``session_document`` builds its sessions (every offer set answered
    renders its offers: validating each again was most of an answer's cost)."""
    row = answer.row
    spelling = kinds.Spelling(row.spelling)
    return {
        "kind": kinds.spell(kinds.OFFERSET_RESPONSE, spelling),
        "meta": {
            "uuid": row.uuid,
            "url": f"{base_url}/offersets/{row.uuid}",
            "created": _instant(row.created),
            "messages": [_message(item, spelling) for item in row.messages],
            "options": [],
        },
        "result": row.result,
        "offers": [
            session_document(item, base_url, row.request, spelling) for item in answer.sessions
        ],
    }
