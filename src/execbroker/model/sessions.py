"""What a broker answers: execution sessions (offers are sessions in phase OFFERED)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from execbroker import kinds
from execbroker.model.common import ComponentMetadata, WireModel
from execbroker.model.resources import SimpleComputeResource, SimpleCost, SimpleStorageResource


class Phase(StrEnum):
    INITIAL = "INITIAL"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    WAITING = "WAITING"
    PREPARING = "PREPARING"
    AVAILABLE = "AVAILABLE"
    RUNNING = "RUNNING"
    RELEASING = "RELEASING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Connector(WireModel):
    kind: str | None = None
    status: Literal["PREPARING", "AVAILABLE", "FINISHED"] = "AVAILABLE"
    protocol: str
    location: str


class ScheduleStartDurationInstant(WireModel):
    """When a step of the session's life starts (an ISO-8601 instant), and for how long."""

    start: str | None = None
    duration: str | None = None


class ScheduleStartDurationInterval(WireModel):
    """The session's available time: ``start`` is the ISO-8601 *interval* it may start in."""

    start: str | None = None
    duration: str | None = None


class ScheduledExecutionSchedule(WireModel):
    preparing: ScheduleStartDurationInstant | None = None
    available: ScheduleStartDurationInterval | None = None
    releasing: ScheduleStartDurationInstant | None = None


class ExecutionSession(WireModel):
    """A ``scheduled-execution-session``: the schema's session that carries a schedule."""

    # In the spelling the client used (see ``kinds.respell``): so a string, not a constant.
    kind: str = kinds.SCHEDULED_SESSION
    meta: ComponentMetadata
    phase: Phase
    expires: datetime | None = None
    executable: dict[str, Any]
    compute: SimpleComputeResource
    storage: list[SimpleStorageResource] = Field(default_factory=list)
    schedule: ScheduledExecutionSchedule
    costs: list[SimpleCost] = Field(default_factory=list)
    connectors: list[Connector] = Field(default_factory=list)


class OfferSetResponse(WireModel):
    kind: str = kinds.OFFERSET_RESPONSE
    meta: ComponentMetadata
    result: Literal["YES", "NO"]
    description: str | None = None
    offers: list[ExecutionSession] = Field(default_factory=list)


class SessionList(WireModel):
    sessions: list[ExecutionSession]


class SessionLogs(WireModel):
    """What a session's task has written so far."""

    stdout: str
    stderr: str


class OutputItem(WireModel):
    name: str
    size: int
    url: str


class OutputList(WireModel):
    outputs: list[OutputItem]
