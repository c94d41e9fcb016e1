"""UpdateRequest: how a client changes a session, with the update kinds of the schema.

``phase`` is set by an enum or string value update (accept, reject, cancel); the
session's duration (``schedule.available.duration``) by an integer value or delta update,
counted in ``units`` (seconds unless it says otherwise).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from execbroker import kinds
from execbroker.model.common import WireModel

PHASE = "phase"
DURATION = "schedule.available.duration"
# Other names clients give the duration: the request's, and a short one.
DURATION_PATHS = (DURATION, "schedule.duration", "schedule.requested.duration", "duration")
UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "second": timedelta(seconds=1),
    "seconds": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "minute": timedelta(minutes=1),
    "minutes": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "hour": timedelta(hours=1),
    "hours": timedelta(hours=1),
}
# No session lasts longer than this (far past any quota); it keeps timedelta in range.
MAX_SECONDS = 10 * 365 * 24 * 3600
Units = Literal[tuple(UNITS)]  # type: ignore[valid-type]


class EnumValueUpdate(WireModel):
    kind: Literal["uri:enum-value-update"] = kinds.ENUM_VALUE_UPDATE  # type: ignore[assignment]
    path: Literal["phase"]
    value: str


class StringValueUpdate(WireModel):
    kind: Literal["uri:string-value-update"] = kinds.STRING_VALUE_UPDATE  # type: ignore[assignment]
    path: Literal["phase"]
    value: str


def _check_path(path: str) -> str:
    if path not in DURATION_PATHS:
        raise ValueError(f"only the duration ({DURATION}) takes an integer update")
    return DURATION


class _DurationUpdate(WireModel):
    path: str
    units: Units = "seconds"

    @model_validator(mode="after")
    def _duration_path(self) -> _DurationUpdate:
        self.path = _check_path(self.path)
        return self

    def unit(self) -> timedelta:
        return UNITS[self.units]


class IntegerValueUpdate(_DurationUpdate):
    kind: Literal["uri:integer-value-update"] = kinds.INTEGER_VALUE_UPDATE  # type: ignore[assignment]
    value: int = Field(gt=0, le=MAX_SECONDS)

    def duration(self, current: timedelta) -> timedelta:
        return self.value * self.unit()


class IntegerDeltaUpdate(_DurationUpdate):
    kind: Literal["uri:integer-delta-update"] = kinds.INTEGER_DELTA_UPDATE  # type: ignore[assignment]
    delta: int = Field(ge=-MAX_SECONDS, le=MAX_SECONDS)

    def duration(self, current: timedelta) -> timedelta:
        return current + self.delta * self.unit()


def _update_tag(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) else kinds.ENUM_VALUE_UPDATE


AnyUpdate = Annotated[
    Annotated[EnumValueUpdate, Tag(kinds.ENUM_VALUE_UPDATE)]
    | Annotated[StringValueUpdate, Tag(kinds.STRING_VALUE_UPDATE)]
    | Annotated[IntegerValueUpdate, Tag(kinds.INTEGER_VALUE_UPDATE)]
    | Annotated[IntegerDeltaUpdate, Tag(kinds.INTEGER_DELTA_UPDATE)],
    Discriminator(_update_tag),
]
PhaseUpdate = EnumValueUpdate | StringValueUpdate
DurationUpdate = IntegerValueUpdate | IntegerDeltaUpdate


class UpdateRequest(WireModel):
    """The schema posts the update itself; earlier drafts wrapped it in ``{update: ...}``."""

    update: AnyUpdate

    @model_validator(mode="before")
    @classmethod
    def _unwrapped(cls, data: Any) -> Any:
        if isinstance(data, dict) and "update" not in data and "kind" in data:
            return {"update": data}
        return data
