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


class ScheduleInstant(WireModel):
    start: str | None = None
    duration: str | None = None


class SessionSchedule(WireModel):
    preparing: ScheduleInstant | None = None
    available: ScheduleInstant | None = None
    releasing: ScheduleInstant | None = None


class ExecutionSession(WireModel):
    kind: str = kinds.SIMPLE_SESSION
    meta: ComponentMetadata
    phase: Phase
    expires: datetime | None = None
    executable: dict[str, Any]
    compute: SimpleComputeResource
    storage: list[SimpleStorageResource] = Field(default_factory=list)
    schedule: SessionSchedule
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
