"""UpdateRequest: how a client changes a session (accept, reject or cancel it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from execbroker import kinds
from execbroker.model.common import WireModel


class EnumValueUpdate(WireModel):
    kind: Literal["uri:enum-value-update"] = kinds.ENUM_VALUE_UPDATE  # type: ignore[assignment]
    path: Literal["phase"]
    value: str


class UpdateRequest(WireModel):
    """The schema posts the update itself; earlier drafts wrapped it in ``{update: ...}``."""

    update: EnumValueUpdate

    @model_validator(mode="before")
    @classmethod
    def _unwrapped(cls, data: Any) -> Any:
        if isinstance(data, dict) and "update" not in data and "kind" in data:
            return {"update": data}
        return data
