"""Compute, storage and data resources a request asks for, and costs and metrics it bounds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from execbroker import kinds
from execbroker.model.common import KindedModel, MinMaxInt, check_ordered


class SimpleComputeResource(KindedModel):
    """Cores and memory (GiB) as inclusive ranges."""

    kind: Literal[kinds.SIMPLE_COMPUTE] = kinds.SIMPLE_COMPUTE  # type: ignore[valid-type]
    cores: MinMaxInt | None = None
    memory: MinMaxInt | None = None
    volumes: list[dict[str, Any]] = Field(default_factory=list)


class SimpleStorageResource(KindedModel):
    """Scratch storage (GiB) as an inclusive range."""

    kind: Literal[kinds.SIMPLE_STORAGE] = kinds.SIMPLE_STORAGE  # type: ignore[valid-type]
    size: MinMaxInt | None = None


class DataResource(KindedModel):
    """Any data resource kind of the schema; kept whole, since brokers may not stage data yet."""

    model_config = ConfigDict(extra="allow")


class MinMaxFloatItem(KindedModel):
    """A cost or metric bound: the client's limits, or the broker's quote."""

    type: str | None = None
    description: str | None = None
    min: float | None = Field(default=None, ge=0, le=1e15, allow_inf_nan=False)
    max: float | None = Field(default=None, ge=0, le=1e15, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> MinMaxFloatItem:
        check_ordered(self.min, self.max)
        return self


class SimpleCost(MinMaxFloatItem):
    kind: Literal[kinds.SIMPLE_COST] = kinds.SIMPLE_COST  # type: ignore[valid-type]


class SimpleMetric(MinMaxFloatItem):
    kind: Literal[kinds.SIMPLE_METRIC] = kinds.SIMPLE_METRIC  # type: ignore[valid-type]
