"""Building blocks shared by every part of the wire schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from execbroker import kinds


class WireModel(BaseModel):
    """Strict about what comes in: an unknown or misspelt field is an error naming it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


MessageLevel = Literal["DEBUG", "INFO", "WARN", "ERROR", "OTHER"]


class MessageItem(WireModel):
    kind: str | None = None
    time: datetime | None = None
    level: MessageLevel = "INFO"
    template: str | None = None
    values: dict[str, str] | None = None
    message: str


class EnumValueOption(WireModel):
    """An update the client may make: set ``path`` to one of ``values``."""

    kind: str = kinds.ENUM_VALUE_OPTION
    path: str
    values: list[str]


class ComponentMetadata(WireModel):
    uuid: str | None = None
    name: str | None = None
    url: str | None = None
    description: str | None = None
    created: datetime | None = None
    modified: datetime | None = None
    messages: list[MessageItem] = Field(default_factory=list)
    options: list[EnumValueOption] = Field(default_factory=list)


def check_ordered(low: float | None, high: float | None) -> None:
    """A min/max pair whose ends are both given must not be upside down."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"min ({low}) is greater than max ({high})")


# No platform has a million cores or GiB; the bound keeps amounts inside every integer column.
MAX_AMOUNT = 1_000_000


class MinMaxInt(WireModel):
    """An inclusive range of a whole, non-negative amount; either end may be left out."""

    min: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    max: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _ordered(self) -> MinMaxInt:
        check_ordered(self.min, self.max)
        return self


class KindedModel(WireModel):
    """A component with a ``kind`` URI; every accepted spelling is stored as the current URI."""

    kind: str
    name: str | None = None
    meta: ComponentMetadata | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _canonical_kind(cls, value: Any) -> Any:
        return kinds.canonical(value) if isinstance(value, str) else value


def kind_of(value: Any) -> str | None:
    """The canonical kind of a raw dict or a parsed model (for discriminated unions)."""
    raw = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kinds.canonical(raw) if isinstance(raw, str) else None
