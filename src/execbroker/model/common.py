"""Building blocks shared by every part of the wire schema."""

from __future__ import annotations

import functools
from datetime import datetime
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from execbroker import kinds


class WireModel(BaseModel):
    """Strict about what comes in: an unknown or misspelt field is an error naming it, and
    no text field (nor a list or mapping of texts) may hold a NUL byte: no file name,
    environment, command line or database column can carry one. (Bodies are checked whole
    before they get here; this holds for models built any other way too.)"""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if isinstance(data, dict):
            text_maps = _text_maps(cls)
            for key, value in data.items():
                # a text checked here, a container by the helper, the rest (numbers, instants,
                # models) not at all: this runs for every model of every request and answer
                if isinstance(value, str):
                    held = "\x00" in value
                else:
                    held = isinstance(value, list | dict) and _holds_nul(
                        value, text_map=key in text_maps
                    )
                if held:
                    raise ValueError(f"{key}: NUL bytes are not allowed")
        return data


@functools.cache
def _text_maps(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that are mappings of texts: found once per model (every
    validation of every wire model asks, and reading annotations costs more than the check)."""
    return frozenset(
        name for name, field in model.model_fields.items() if _is_text_map(field.annotation)
    )


def _is_text_map(annotation: Any) -> bool:
    """``dict[str, str]`` (or an optional one): a mapping of texts, not a model."""
    if get_origin(annotation) is dict:
        return get_args(annotation) == (str, str)
    return get_origin(annotation) in (Union, UnionType) and any(
        _is_text_map(arg) for arg in get_args(annotation)
    )


def _holds_nul(value: Any, *, text_map: bool) -> bool:
    """A NUL in a text, a list of texts, or (``text_map``) a mapping of texts; models below
    check their own fields."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(isinstance(item, str) and "\x00" in item for item in value)
    if isinstance(value, dict) and text_map:
        return any(isinstance(i, str) and "\x00" in i for pair in value.items() for i in pair)
    return False


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
